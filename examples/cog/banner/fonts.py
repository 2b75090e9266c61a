"""A helper module next to predict.py: Cog projects import them from the project root."""

import pathlib

# Read relative to the working directory, which Cog (and lambdaml) make the project's.
STYLES = dict(line.split("=", 1) for line in pathlib.Path("styles.txt").read_text().split())
