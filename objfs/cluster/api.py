"""objfs.cluster.api — the internal HTTP API nodes use among themselves.

A Quart-Trio app on `api_address` (cluster.json), separate from S3 and from
the admin API. Every request must be signed with the cluster secret
(objfs.cluster.peers), a nonce included; anything else, a replay included,
gets 401 before its body is used.

    POST /cluster/v1/join     {name, raft_address, api_address} -> {cluster_id, node_number, peers}
    POST /cluster/v1/admit    {number}   make a joined node a voting Raft member
    POST /cluster/v1/read     {device, ranges}  fragment bytes (objfs.cluster.remote)
    POST /cluster/v1/write?device=D&size=N&crc=C  a fragment -> {offset, length}
    POST /cluster/v1/heal     {segments}  heal this node's fragments of these (found damaged)
    POST /cluster/v1/forget   {extents}  free these pending fragments: no record will name them
    GET  /cluster/v1/status   the catalog and this node's view of Raft
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import quart
from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from objfs.cluster import peers
from objfs.cluster.remote import MAX_FORGET_EXTENTS, MAX_FRAGMENT_BYTES, MAX_HEAL_HINTS
from objfs.errors import InvalidArgument, NoSpace, ObjfsError
from objfs.store.types import Extent

if TYPE_CHECKING:
    from objfs.cluster.member import ClusterMember

# What reading a field of a JSON body raises when it is not what is asked
# (OverflowError: int() of 1e400 or Infinity, which JSON parsers accept).
_MALFORMED = (KeyError, TypeError, ValueError, OverflowError)


def create_cluster_app(member: ClusterMember) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_FRAGMENT_BYTES
    app.config["RESPONSE_TIMEOUT"] = None  # a large read may take its time
    seen = peers.SeenNonces(time.time())

    def answer(body: Any, status: int = 200) -> quart.Response:
        return quart.Response(
            json.dumps(body) + "\n", status=status, content_type="application/json"
        )

    @app.before_request
    async def check_signature() -> quart.Response | None:
        body = await request.get_data(cache=True, as_text=False)
        assert isinstance(body, bytes)
        query = request.query_string.decode("ascii", "replace")
        target = request.path + (f"?{query}" if query else "")
        refused = peers.verify(
            member.state.secret,
            request.method,
            target,
            body,
            dict(request.headers),
            time.time(),
            seen,
        )
        if refused is not None:
            return answer({"error": f"refused: {refused}"}, 401)
        return None

    async def json_body() -> dict[str, Any]:
        try:
            body = json.loads(await request.get_data(cache=True, as_text=False))
        except (ValueError, RecursionError):
            raise InvalidArgument("the body is not JSON (or nested too deep)") from None
        if not isinstance(body, dict):
            raise InvalidArgument("the body is not a JSON object")
        return body

    @app.post("/cluster/v1/join")
    async def join() -> quart.Response:
        body = await json_body()
        return answer(await member.admit_join(body))

    @app.post("/cluster/v1/admit")
    async def admit() -> quart.Response:
        body = await json_body()
        try:
            number = int(body["number"])
        except _MALFORMED:
            raise InvalidArgument("admit needs a node number") from None
        await member.admit_member(number)
        return answer({"admitted": number})

    @app.post("/cluster/v1/read")
    async def read() -> quart.Response:
        body = await json_body()
        try:
            device_index = int(body["device"])
            ranges = [(int(offset), int(length)) for offset, length in body["ranges"]]
        except _MALFORMED:
            raise InvalidArgument("a read needs a device and [offset, length] ranges") from None
        data = await member.read_local(device_index, ranges)
        return quart.Response(data, content_type="application/octet-stream")

    @app.post("/cluster/v1/write")
    async def write() -> quart.Response:
        try:
            device_index = int(request.args["device"])
            size = int(request.args["size"])
            crc = int(request.args["crc"])
        except (KeyError, ValueError):
            raise InvalidArgument("a write needs device, size and crc") from None
        data = await request.get_data(cache=True, as_text=False)
        assert isinstance(data, bytes)
        extent = await member.write_local(device_index, data, size, crc)
        return answer({"offset": extent.offset_bytes, "length": extent.length_bytes})

    @app.post("/cluster/v1/heal")
    async def heal() -> quart.Response:
        body = await json_body()
        try:
            segment_ids = [int(each) for each in body["segments"]]
        except _MALFORMED:
            raise InvalidArgument("a heal needs a list of segment ids") from None
        if len(segment_ids) > MAX_HEAL_HINTS:
            raise InvalidArgument(f"at most {MAX_HEAL_HINTS} segments per heal")
        return answer({"queued": member.heal_hint(segment_ids)})

    @app.post("/cluster/v1/forget")
    async def forget() -> quart.Response:
        body = await json_body()
        try:
            extents = [Extent(int(d), int(o), int(n)) for d, o, n in body["extents"]]
        except _MALFORMED:
            raise InvalidArgument("a forget needs a list of [device, offset, length]") from None
        if len(extents) > MAX_FORGET_EXTENTS:
            raise InvalidArgument(f"at most {MAX_FORGET_EXTENTS} extents per forget")
        return answer({"freed": member.forget_local(extents)})

    @app.get("/cluster/v1/status")
    async def status() -> quart.Response:
        return answer(member.status())

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> quart.Response:
        return answer({"error": f"{request.method} {request.path}: {exc.name}"}, exc.code or 500)

    @app.errorhandler(ObjfsError)
    async def objfs_error(exc: ObjfsError) -> quart.Response:
        status = 503
        if isinstance(exc, InvalidArgument):
            status = 400
        elif isinstance(exc, NoSpace):
            status = 507
        return answer({"error": str(exc)}, status)

    return app
