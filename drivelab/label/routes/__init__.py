"""The label app's HTTP routes, one router per area; each takes the shared state with
``Depends(get_state)`` and the caller with ``Depends(current_user)``."""

from drivelab.label.routes import assist, export, images, instances, masks, pages, review

ROUTERS = (pages.router, images.router, masks.router, instances.router, assist.router, review.router,
           export.router)

__all__ = ["ROUTERS"]
