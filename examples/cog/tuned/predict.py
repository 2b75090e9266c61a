from typing import Optional

from cog import BasePredictor, Input, Path, current_scope


class Predictor(BasePredictor):
    def setup(self, weights: Optional[Path] = None) -> None:
        # A directory (or a file) of weights: the shipped ./weights, or a training's output.
        source = Path(weights) if weights else None
        if source is not None and source.is_dir():
            source = source / "greeting.txt"
        self.greeting = source.read_text().strip() if source else "hi"

    def predict(self, name: str = Input(description="Who to greet")) -> str:
        current_scope().record_metric("name_length", len(name))  # shown in the prediction's metrics
        return f"{self.greeting}, {name}"
