import os
from typing import Optional

from cog import BasePredictor, Input, Path, Secret
from tabulate import tabulate

from fonts import STYLES


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.border = os.environ["BANNER_BORDER"]

    def predict(
        self,
        text: str = Input(description="What the banner says", max_length=200),
        style: str = Input(description="How it says it", choices=["plain", "loud", "quiet"], default="plain"),
        width: int = Input(description="Columns of border", ge=4, le=80, default=20),
        signature: Optional[Secret] = Input(description="Signed at the bottom; never shown", default=None),
        logo: Optional[Path] = Input(description="A text file put on top", default=None),
        old_width: Optional[int] = Input(description="Use width instead", default=None, deprecated=True),
    ) -> Path:
        lines = [STYLES[style] % text]
        if logo is not None:
            lines.insert(0, logo.read_text().strip())
        if signature is not None:
            lines.append(f"-- {len(signature.get_secret_value())} letters")
        table = tabulate([[line] for line in lines], tablefmt="plain")
        out = Path("/tmp") / f"banner-{os.getpid()}.txt"
        out.write_text(f"{self.border * width}\n{table}\n{self.border * width}\n")
        print(f"wrote {len(lines)} lines")
        return out
