"""The server's front answers webhook deliveries itself and hands everything else to its threads."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from connector.serve import FrontDispatcher
from connector.services import build
from connector.web import WEBHOOK_PATHS, create_app
from tests.support.helpers import make_settings


@dataclass
class Channel:
    """A connection with requests read in full, the first one answered next (as waitress's)."""

    requests: list[Any]
    dispatcher: FrontDispatcher
    served: list[str] = field(default_factory=list)

    def service(self) -> None:
        self.served.append(self.requests.pop(0).path)
        if self.requests:  # the next request on the connection, as waitress hands it on
            self.dispatcher.add_task(self)


def request(method: str, path: str, error: Any = None) -> Any:
    return SimpleNamespace(command=method, path=path, error=error)


def test_webhook_posts_are_answered_by_the_front_and_everything_else_by_the_threads():
    front = FrontDispatcher({"/webhooks/hubspot", "/webhooks/generic"})  # no threads started: they queue
    delivery = Channel([request("POST", "/webhooks/hubspot")], front)
    others = [
        Channel([request("GET", "/webhooks/hubspot")], front),  # answered 405 by the app
        Channel([request("POST", "/webhooks/hubspot/x")], front),
        Channel([request("POST", "/install/hubspot")], front),
        Channel([request("GET", "/healthz")], front),
        Channel([request("POST", "/webhooks/generic", error=ValueError("bad request line"))], front),
    ]
    for channel in [delivery, *others]:
        front.add_task(channel)
    assert list(front.queue) == others  # the threads' queue
    assert not delivery.served  # noted while the front reads; answered after
    front.serve_webhooks()
    assert delivery.served == ["/webhooks/hubspot"]
    assert not any(channel.served for channel in others)


def test_deliveries_behind_one_another_on_a_connection_are_all_answered_in_the_same_pass():
    front = FrontDispatcher({"/webhooks/generic"})
    pipelined = Channel([request("POST", "/webhooks/generic") for _ in range(3)], front)
    mixed = Channel([request("POST", "/webhooks/generic"), request("GET", "/healthz")], front)
    front.add_task(pipelined)
    front.add_task(mixed)
    front.serve_webhooks()
    assert pipelined.served == ["/webhooks/generic"] * 3
    assert mixed.served == ["/webhooks/generic"]
    assert list(front.queue) == [mixed]  # its page view goes to the threads


def test_the_app_names_every_source_path_for_the_front(sqlite_url):
    app = create_app(build(make_settings(sqlite_url)))
    paths = app.extensions[WEBHOOK_PATHS]
    assert {"/webhooks/generic", "/webhooks/hubspot"} <= paths
    assert paths == {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("receiver.")}
