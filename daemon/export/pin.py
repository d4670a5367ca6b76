"""``--kubernetes --image REPO:TAG``: a Deployment names its image by digest, so a tag is
resolved against its registry when the YAML is written (as ``crane digest`` does), with the
same insecure-host and credential rules as pulls. A reference that already has a digest is
used as given, without asking anyone."""

from __future__ import annotations

from daemon.errors import ImageError, InvalidArgument
from daemon.export.push import PushClient
from daemon.images import ImageStore
from daemon.images.errors import PullFailure
from daemon.images.registry import new_session
from manifests.reference import InvalidReference, parse_reference


async def pin_image(images: ImageStore, image: str) -> str:
    """``image`` as ``REGISTRY/REPO@sha256:…``: its tag (``latest`` when it has none) resolved
    to the digest the registry gives now. ImageError, in one line, when the registry cannot be
    asked or does not know the tag."""
    try:
        ref = parse_reference(image)
    except InvalidReference as exc:
        raise InvalidArgument(f"--image {image!r}: {exc}; use REPO:TAG or REPO@sha256:...") \
            from exc
    if ref.digest is not None:
        return image
    tag = ref.tag or "latest"
    try:
        async with new_session() as session:
            client = images.endpoint_client(session, ref.canonical, PushClient)
            assert isinstance(client, PushClient)
            digest = await client.manifest_digest(tag)
    except PullFailure as exc:
        raise ImageError(ref.canonical, f"{exc}; pass --image REPO@sha256:... to name the "
                         "digest yourself") from exc
    return f"{ref.registry}/{ref.repository}@{digest}"
