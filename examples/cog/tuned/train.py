import tempfile

from cog import Input, Path


def train(greeting: str = Input(description="The word the tuned model greets with")) -> Path:
    out = Path(tempfile.mkdtemp()) / "greeting.txt"
    out.write_text(greeting)
    return out
