import asyncio

from cog import AsyncConcatenateIterator, BasePredictor, Input


class Chat(BasePredictor):
    async def setup(self) -> None:
        self.greeting = "you said"

    async def predict(
        self,
        prompt: str = Input(description="What to answer"),
        delay: float = Input(description="Seconds between words", ge=0, le=5, default=0.05),
    ) -> AsyncConcatenateIterator[str]:
        for word in f"{self.greeting}: {prompt}".split():
            await asyncio.sleep(delay)
            yield word + " "
