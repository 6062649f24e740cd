"""`python -m perturbed_layers`: the `perturbed-layers` command line."""

import sys

try:
    from perturbed_layers.experiments import main
except ImportError as error:  # pydantic, PyYAML, tqdm or matplotlib missing
    sys.exit(
        f"perturbed-layers needs the experiments extra ({error}): "
        'pip install "perturbed_layers[experiments]"'
    )

if __name__ == "__main__":
    sys.exit(main())
