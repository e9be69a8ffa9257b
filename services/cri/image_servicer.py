"""gRPC servicer of runtime.v1.ImageService: decode, call the domain, encode."""

from __future__ import annotations

from k8s.runtime.v1 import api_pb2, api_pb2_grpc
from services.cri.chunks import chunks
from services.cri.images import Images


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: Images) -> None:
        self._images = images

    async def PullImage(self, request, context):  # noqa: N802 (gRPC naming)
        image_ref = await self._images.pull(request.image.image, request.auth)
        return api_pb2.PullImageResponse(image_ref=image_ref)

    async def ImageStatus(self, request, context):  # noqa: N802
        image = await self._images.status(request.image.image)
        return api_pb2.ImageStatusResponse(image=image)

    async def ListImages(self, request, context):  # noqa: N802
        wanted = request.filter.image.image if request.HasField("filter") else ""
        return api_pb2.ListImagesResponse(images=await self._images.list(wanted))

    async def StreamImages(self, request, context):  # noqa: N802
        wanted = request.filter.image.image if request.HasField("filter") else ""
        for part in chunks(await self._images.list(wanted)):
            yield api_pb2.StreamImagesResponse(images=part)

    async def RemoveImage(self, request, context):  # noqa: N802
        await self._images.remove(request.image.image)
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request, context):  # noqa: N802
        images, containers = await self._images.filesystem_usage()
        return api_pb2.ImageFsInfoResponse(image_filesystems=[images],
                                           container_filesystems=[containers])
