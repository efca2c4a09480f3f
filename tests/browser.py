"""A real headless browser for the tests: Debian's chromium, driven over the Chrome DevTools
Protocol (a websocket, with aiohttp's client). No driver and no download: the browser the
machine has."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from servers import stop


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        #: events the browser sent while a command's answer was awaited (``event`` reads them)
        self._events: list[dict[str, Any]] = []

    async def _receive(self, within: float) -> dict[str, Any]:
        """The browser's next message; an event is also kept for ``event``."""
        message: dict[str, Any] = json.loads((await self.ws.receive(timeout=within)).data)
        if "method" in message:
            self._events.append(message)
        return message

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call = next(self._ids)
        await self.ws.send_str(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = await self._receive(30)
            if message.get("id") == call:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def event(self, method: str, within: float = 20) -> dict[str, Any]:
        """The parameters of the next ``method`` event (Fetch.requestPaused, say)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            for i, message in enumerate(self._events):
                if message["method"] == method:
                    return dict(self._events.pop(i).get("params", {}))
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no {method} event in {within} s")
            await self._receive(left)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.until("document.readyState === 'complete'")

    async def until(self, expression: str, within: float = 20) -> Any:
        """Wait until ``expression`` is truthy in the page; its value."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{expression} stayed false for {within} s")
            await asyncio.sleep(0.1)

    async def type(self, selector: str, text: str) -> None:
        """Focus the field and type into it as a keyboard would (input events and all)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def press_enter(self) -> None:
        for kind in ("rawKeyDown", "char", "keyUp"):
            extra = {"text": "\r"} if kind == "char" else {}
            await self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13, **extra)

    async def screenshot(self, fmt: str = "png", quality: int = 80) -> bytes:
        import base64

        options: dict[str, Any] = {"quality": quality} if fmt == "jpeg" else {}
        shot = await self.send("Page.captureScreenshot", format=fmt, **options)
        return base64.b64decode(shot["data"])


def launch(width: int, height: int, profile: str) -> subprocess.Popen[str]:
    binary = chromium()
    assert binary, "chromium is not installed (apt-get install chromium; see .ci/run)"
    return subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
         f"--window-size={width},{height}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@asynccontextmanager
async def browser(width: int = 1200, height: int = 900) -> AsyncIterator[Page]:
    profile = tempfile.mkdtemp(prefix="emomo-chromium-")
    proc = await asyncio.to_thread(launch, width, height, profile)
    try:
        assert proc.stderr is not None
        port = None
        for _ in range(200):
            line = await asyncio.to_thread(proc.stderr.readline)
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
            if not line and proc.poll() is not None:
                break
        assert port, "chromium did not start its DevTools endpoint"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                yield page
    finally:
        stop(proc)
        shutil.rmtree(profile, ignore_errors=True)
