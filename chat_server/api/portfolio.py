"""The portfolio dashboard over HTTP: JSON for the console, CSV for a spreadsheet."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chat_server.api.common import BadRequest, current, endpoint, ok, services
from chat_server.tools.portfolio import PortfolioRow
from chat_server.tools.portfolio_csv import portfolio_csv


async def _rows(request: Request) -> list[PortfolioRow]:
    user, _ = await current(request)
    counsellor = request.query_params.get("counsellor") or None
    if counsellor is not None and (len(counsellor) > 64 or not counsellor.isalnum()):
        raise BadRequest("invalid_field", "'counsellor' must be a user id", 422)
    return await services(request).portfolio.rows(user, counsellor)


@endpoint
async def portfolio(request: Request) -> Response:
    """GET /api/portfolio?counsellor=: the dashboard's rows (docs/protocol.md, "Portfolio")."""
    rows = await _rows(request)
    return ok({"rows": [r.public() for r in rows], "now": services(request).portfolio.now()})


@endpoint
async def portfolio_export(request: Request) -> Response:
    """GET /api/portfolio.csv?counsellor=: the same rows as CSV (server-visible fields only)."""
    rows = await _rows(request)
    return Response(
        portfolio_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="portefeuille.csv"'},
    )


routes = [
    Route("/api/portfolio", portfolio, methods=["GET"]),
    Route("/api/portfolio.csv", portfolio_export, methods=["GET"]),
]
