"""The ``image.*`` and ``events.*`` methods (SPEC §11): thin, over the image store and the bus."""

from __future__ import annotations

import asyncio
import contextlib

from client.protocol.messages import (
    EmptyResult,
    ImageListResult,
    ImagePullParams,
    ImagePullResult,
    ImageSummary,
)
from daemon.events import EventBus
from daemon.images import ImageStore
from daemon.notify import ClientGone, Notify
from daemon.workers.commands.progress import progress_relay

__all__ = ["EventMethods", "ImageMethods"]


class ImageMethods:
    """Implements ``daemon.api.services.ImageService``."""

    def __init__(self, images: ImageStore) -> None:
        self.images = images

    async def image_pull(self, params: ImagePullParams, notify: Notify) -> ImagePullResult:
        async with progress_relay(notify, params.ref, params.progress) as relay:
            image = await self.images.pull(params.ref, refresh=params.refresh,
                                           progress=relay.pull)
        return ImagePullResult(ref=image.ref, digest=image.digest, slug=image.slug,
                               path=str(image.path), size_bytes=image.size_bytes)

    async def image_list(self) -> ImageListResult:
        images = await asyncio.to_thread(self.images.list_images)
        return ImageListResult(images=[
            ImageSummary(ref=i.ref, digest=i.digest, slug=i.slug, size_bytes=i.size_bytes)
            for i in images])


class EventMethods:
    """Implements ``daemon.api.services.EventService``."""

    def __init__(self, events: EventBus) -> None:
        self.events = events

    async def subscribe(self, notify: Notify) -> EmptyResult:
        async def stream() -> None:
            with contextlib.suppress(ClientGone):
                async for event in self.events.stream():
                    await notify("event", event)

        notify.spawn(stream())
        return EmptyResult()
