"""The datasets page (each card, and a grid of mock images: never private pixels) and the
federation page (this hospital's signed card, the members, add or remove a member)."""

from __future__ import annotations

import json
import threading
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from common.errors import DomainError
from domain_setup.server.console import render
from domain_setup.server.console.context import Console, Denied

MOCK_TILES = 12


class MockTiles:
    """PNG thumbnails of the first mock images of each dataset's training images,
    fetched once per asset (a replaced dataset gets new ones)."""

    def __init__(self) -> None:
        self._tiles: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()

    def of(self, admin: Any, dataset_name: str) -> list[bytes]:
        dataset = next((d for d in admin.syft_client().datasets.get_all()
                        if d.name == dataset_name), None)
        if dataset is None:
            raise DomainError(f"no dataset {dataset_name[:64]!r}")
        asset = next((a for a in dataset.assets if a.name == "train_images"), None)
        if asset is None:
            return []
        key = str(asset.action_id)
        with self._lock:
            if key not in self._tiles:
                mock = asset.mock  # the synthetic stand-in, never the private data
                self._tiles[key] = [render.thumbnail(image) for image in mock[:MOCK_TILES]]
            return self._tiles[key]


def dataset_cards(admin: Any) -> list[dict]:
    """Name, summary, card text and asset shapes of every dataset."""
    return [{"name": d.name, "summary": d.summary or "", "card": d.description.text
             if hasattr(d.description, "text") else str(d.description or ""),
             "assets": [(a.name, a.description.text if hasattr(a.description, "text")
                         else str(a.description or "")) for a in d.assets]}
            for d in admin.syft_client().datasets.get_all()]


def register(router: Any, console: Console) -> None:
    """The datasets and federation routes."""
    tiles = MockTiles()

    @router.get("/datasets")
    async def datasets_page(request: Request) -> Any:
        session = console.user(request, "list_datasets")
        cards = await console.act(session, dataset_cards)
        return console.page(session, "datasets.html", cards=cards, tiles=MOCK_TILES)

    @router.get("/datasets/{name}/mock/{index}.png")
    async def mock_tile(name: str, index: int, request: Request) -> Any:
        session = console.user(request, "read_mock")
        images = await console.act(session, lambda admin: tiles.of(admin, name))
        if not 0 <= index < len(images):
            raise Denied(404, "no such mock image")
        return Response(images[index], media_type="image/png")

    @router.get("/federation")
    async def federation_page(request: Request) -> Any:
        session = console.user(request, "change_settings")

        def read(admin: Any) -> tuple[Any, list]:
            try:
                card = admin.federation_card()
            except DomainError as exc:  # federation not enabled yet
                card = str(exc)
            return card, admin.federation_members()
        from domain_setup.admin.federation_card import key_id

        card, members = await console.act(session, read)
        return console.page(session, "federation.html", card=card, members=members,
                            key_id=key_id(card) if isinstance(card, dict) else "",
                            card_text=json.dumps(card, indent=2) if isinstance(card, dict)
                            else "")

    @router.post("/federation/add")
    async def add_member(request: Request) -> Any:
        session = console.user(request, "change_settings")
        text = (await console.form(request, session)).get("card", "")
        return await console.act_then(session, lambda admin: admin.add_federation_card(text=text),
                                      "member added (card signature verified)",
                                      "/admin/federation")

    @router.post("/federation/remove")
    async def remove_member(request: Request) -> Any:
        session = console.user(request, "change_settings")
        name = (await console.form(request, session)).get("name", "")
        return await console.act_then(
            session, lambda admin: admin.remove_federation_member(name),
            f"member {name[:64]} removed", "/admin/federation")
