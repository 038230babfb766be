"""The French spaCy pipeline: loaded once, on first use, and run off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


class FrenchNlp:
    """Lazy holder of ``fr_core_news_sm``; loading takes seconds, so it waits until needed."""

    def __init__(self, model: str = "fr_core_news_sm") -> None:
        self.model = model
        self._nlp: Any = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._nlp is not None

    async def pipeline(self) -> Any:
        async with self._lock:
            if self._nlp is None:
                self._nlp = await asyncio.to_thread(self._load)
        return self._nlp

    def _load(self) -> Any:
        import spacy

        logger.info("loading spaCy pipeline %s", self.model)
        return spacy.load(self.model)

    async def analyse(self, texts: Sequence[str]) -> list[Any]:
        """spaCy ``Doc`` objects for ``texts``, computed in a worker thread."""
        nlp = await self.pipeline()
        return await asyncio.to_thread(lambda: list(nlp.pipe(texts)))
