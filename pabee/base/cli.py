"""What the scripts' command lines share: help that states each flag's default once. argparse's
ArgumentDefaultsHelpFormatter appends "(default: X)" to every flag, X being the value the parser
holds, which for a flag whose default is decided later (None: the run's own, an environment
variable, a count of GPUs) is not the default a user gets; such a flag says its default in its own
words, and nothing is appended to it."""

import argparse
import re


class OneDefault(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only to a flag whose help does not say its default itself, that a user
    may leave out, and whose default is a value (None is decided later: its help says how)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if re.search(r"\bdefault\b", text, re.IGNORECASE) or action.required or action.default is None:
            return text
        return super()._get_help_string(action)
