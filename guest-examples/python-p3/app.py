"""A WASI 0.3 Python app: exports `wasi:http/handler@0.3.0`, whose `handle`
is a coroutine, so one instance (one CPython) serves several requests at
once while they wait.

- `/`              `Hello from a WASI 0.3 Python component!`
- `/sleep/<ms>`    prints `sleeping <ms> ms`, waits on the host's clock
                   (not blocking the instance), then answers `slept <ms> ms`

Each answer says in `x-instance-request` which request of its instance it
was: requests that share an instance count up together.
"""

import componentize_py_async_support
import wit_world
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import monotonic_clock
from wit_world.imports.wasi_http_types import Fields, Request, Response

# Lives as long as the instance.
started = 0


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        global started
        started += 1
        n = started
        path = (request.get_path_with_query() or "/").split("?")[0]
        if path.startswith("/sleep/"):
            ms = int(path[len("/sleep/"):])
            print(f"sleeping {ms} ms", flush=True)
            await monotonic_clock.wait_for(ms * 1_000_000)
            body = f"slept {ms} ms\n"
        else:
            body = "Hello from a WASI 0.3 Python component!\n"
        return text(body, n)


def text(body: str, n: int) -> Response:
    """A response whose body a task writes after `handle` has returned."""
    tx, rx = wit_world.byte_stream()
    componentize_py_async_support.spawn(write(tx, body.encode()))
    trailers = wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
        lambda: Ok(None)
    )[1]
    headers = Fields.from_list([
        ("content-type", b"text/plain; charset=utf-8"),
        ("x-instance-request", str(n).encode()),
    ])
    return Response.new(headers, rx, trailers)[0]


async def write(tx, body: bytes) -> None:
    with tx:
        await tx.write_all(body)
