"""The small common base every other subpackage stands on, with no torch and no other subpackage
below it: errors and their one-line messages, whole-file writes and JSON, the output folder and its
lock, the names inside a run folder, logging, the scripts' help, hub reachability, the values flags
and config fields take, and lazy entry points."""
