"""Write a model run_glue.py saved as a plain transformers model, whole or cut after k layers.

    python export.py --model_dir RUN --output_dir OUT [--layers K] [--onnx]

OUT holds transformers' own XForSequenceClassification of the backbone (BertForSequenceClassification
for a BERT run), the first K layers (default: all) with layer K's head as its classifier, and the
tokenizer and label names: any tool that loads a classifier loads it, no trust_remote_code. With
--onnx, OUT also holds model.onnx (batch and length dynamic) for ONNX Runtime. The export is checked
before it is kept (it loads with no missing or unexpected weights, its logits equal the run's layer K
on a few rows within 1e-4, ONNX Runtime's too), else nothing is written. The table printed first is each
layer's own head on dev, from the run's results: the metric a K-layer export keeps, and its speed-up.
A model whose heads read the mean of the tokens has no plain class to go to: it is refused in one
line (load the run folder itself with trust_remote_code=True, docs/export.md).
Bad input: one line on stderr, exit code 2.
"""

import argparse
import sys
from pathlib import Path

from pabee.base.cli import OneDefault
from pabee.base.errors import UsageError, os_error_line
from pabee.base.file_io import describe_missing


def build_parser():
    p = argparse.ArgumentParser(prog="export.py", description=__doc__.splitlines()[0],
                                formatter_class=OneDefault)
    add = p.add_argument
    add("--model_dir", required=True, help="A folder run_glue.py saved (or any of its checkpoint-N).")
    add("--output_dir", required=True, help="A new or empty folder for the export.")
    add("--layers", type=int, default=None, help="Keep the first K layers and layer K's head (default: every layer).")
    add("--onnx", action="store_true", help="Also write model.onnx, checked against ONNX Runtime.")
    return p


def main(argv=None):
    flags = build_parser().parse_args(argv)
    try:
        config = Path(flags.model_dir) / "config.json"
        if not config.is_file():
            raise UsageError(f"--model_dir {flags.model_dir}: {config} {describe_missing(config)}: give a folder "
                             "run_glue.py saved")
        from pabee.base.logs import setup_logging
        from pabee.deploy.plain_export import check_output, export, layer_table

        check_output(flags.model_dir, flags.output_dir, flags.onnx)  # before the run is read
        setup_logging()
        for layer, metric, value, speed_up in layer_table(flags.model_dir):
            print(f"layer {layer}: {metric} {value:.4f} on dev, {speed_up:.2f}x fewer layers", file=sys.stderr)
        print(f"export.py: writing {flags.output_dir}{' with model.onnx' if flags.onnx else ''} (checked before it is "
              "kept)", file=sys.stderr)
        differences = export(flags.model_dir, flags.output_dir, flags.layers, flags.onnx)
        checked = ", ".join(f"{where} max |diff| {d:.2g}" for where, d in differences.items())
        print(f"export.py: wrote {flags.output_dir} ({checked})", file=sys.stderr)
    except UsageError as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"export.py: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
