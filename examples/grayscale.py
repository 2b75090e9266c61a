"""Image in, image out: a grayscale converter using Pillow.

`image` can be a local file, s3://, gs://, https:// or a data: URI; the model sees a local
path either way. The returned Path is uploaded to LAMBDAML_OUTPUT_URL (s3://bucket/prefix
or gs://...) when set, and otherwise comes back inline as a data: URI.

Run it with `python examples/grayscale.py [photo.png]` (needs `pip install Pillow`).
"""

import sys
import tempfile

import lambdaml
from lambdaml import Input, Path, model


@model(name="grayscale", cpu=0.25, min=0, max=2, packages=["Pillow==13.0.0"])
def grayscale(
    image: Path = Input(description="Photo to convert"),
    contrast: float = Input(default=1.0, ge=0.1, le=4.0, description="Contrast factor for the result"),
) -> Path:
    from PIL import Image, ImageEnhance

    gray = ImageEnhance.Contrast(Image.open(image).convert("L")).enhance(contrast)
    out = Path(tempfile.mkdtemp()) / "gray.png"
    gray.save(out)
    return out


def sample_photo() -> Path:
    """A small colourful picture, for running the example without a photo of your own."""
    from PIL import Image

    path = Path(tempfile.mkdtemp()) / "sample.png"
    Image.new("RGB", (64, 48), (200, 40, 90)).save(path)
    return path


if __name__ == "__main__":
    photo = Path(sys.argv[1]) if len(sys.argv) > 1 else sample_photo()
    deployment = grayscale.deploy()
    print(f"deployed {deployment.name} version {deployment.version} at {deployment.url}")
    result = lambdaml.run("grayscale", input={"image": photo, "contrast": 1.5})
    print("output:", result if len(result) < 120 else result[:80] + "...")
    print("Ray dashboard:", deployment.dashboard_url)
