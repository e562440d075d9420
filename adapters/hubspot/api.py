"""The few HubSpot endpoints Offboard calls, through ``hubspot-api-client``.

Every call goes through ``_send``: it waits for the account's rate budget (shared by every
process), sets a timeout, reads the X-HubSpot-RateLimit-* headers, waits out a 429 a few
times (one interval each; HubSpot sends no Retry-After), and translates every failure into
the port's error tree. An installed portal's requests each carry the OAuth access token of
the moment (``token``, refreshed ahead of its expiry by the token keeper); a 401 renews it
once and tries again.
The SDK's own urllib3 retries are off so that the limiter sees every request.

Records come back as the SDK's models (``.id``, ``.properties``, ``.associations``…).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache, cached_property, partial
from typing import TYPE_CHECKING, Any

from hubspot import HubSpot
from urllib3.util.retry import Retry

from adapters.hubspot.errors import translate
from adapters.hubspot.ratelimit import Limits
from connector import metrics
from connector.errors import CrmError, CrmPermanent, CrmRateLimited

if TYPE_CHECKING:
    from adapters.hubspot.settings import HubSpotSettings

TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
RATE_LIMIT_WAITS = 3  # 429s waited out in-process before the caller gets CrmRateLimited
LONGEST_WAIT = 60.0  # a longer hold (the daily limit) goes back to the queue instead
BATCH_LIMIT = 100  # inputs per batch call
SEARCH_PAGE = 100  # results per search page (HubSpot allows 200)

_MODELS = {
    "deals": "hubspot.crm.deals",
    "contacts": "hubspot.crm.contacts",
    "companies": "hubspot.crm.companies",
    "tasks": "hubspot.crm.objects.tasks",
    "notes": "hubspot.crm.objects.notes",
}


class HubSpotApi:
    """``token``: an installed portal's fresh OAuth access token, asked for before each request
    (``Connection.token``); None for a private app, whose token the client holds."""

    def __init__(self, client: HubSpot, limits: Limits, token: Callable[[], str] | None = None) -> None:
        self._client = client
        self.limits = limits
        self._token = token
        self._apis: dict[tuple[str, str], Any] = {}

    @classmethod
    def from_settings(
        cls, settings: HubSpotSettings, limits: Limits, token: Callable[[], str] | None = None
    ) -> HubSpotApi:
        if token is not None:  # an installed portal: each request carries the token of the moment
            return cls(HubSpot(host=settings.api_base_url, retry=Retry(total=0)), limits, token)
        if settings.access_token is None:
            raise CrmPermanent("HUBSPOT_ACCESS_TOKEN is not set: HubSpot is off")
        client = HubSpot(
            access_token=settings.access_token.get_secret_value(),
            host=settings.api_base_url,
            retry=Retry(total=0),
        )
        return cls(client, limits)

    # --- reads -------------------------------------------------------------

    def account_details(self) -> dict[str, Any]:
        """GET /account-info/v3/details (the SDK has no wrapper: its generic call path is used)."""
        client = self._owners.api_client
        data: dict[str, Any] = self._send(
            "read the account details",
            client.call_api,
            "/account-info/v3/details",
            "GET",
            header_params={"Accept": "application/json"},
            response_types_map={200: "object"},
            auth_settings=["oauth2"],
            _return_http_data_only=False,
        )
        return data

    def deal_pipelines(self) -> list[Any]:
        pipelines = self._client.crm.pipelines.pipelines_api
        found = self._send("read the deal pipelines", pipelines.get_all_with_http_info, "deals")
        return list(found.results)

    def get(
        self,
        object_type: str,
        object_id: str,
        properties: Sequence[str],
        *,
        associations: Sequence[str] = (),
        history: Sequence[str] = (),
    ) -> Any:
        """One record; CrmPermanent (404) when it does not exist."""
        return self._send(
            f"read {object_type} {object_id}",
            self._api(object_type, "basic_api").get_by_id_with_http_info,
            object_id,
            properties=list(properties),
            associations=list(associations) or None,
            properties_with_history=list(history) or None,
        )

    def read_batch(self, object_type: str, ids: Sequence[str], properties: Sequence[str]) -> list[Any]:
        models = _models(object_type)
        results: list[Any] = []
        for chunk in chunks(list(ids), BATCH_LIMIT):
            request = models.BatchReadInputSimplePublicObjectId(
                inputs=[models.SimplePublicObjectId(id=i) for i in chunk],
                properties=list(properties),
                properties_with_history=[],
            )
            api = self._api(object_type, "batch_api")
            found = self._send(f"read {object_type}", api.read_with_http_info, request)
            results.extend(found.results)
        return results

    def associations_batch(self, from_type: str, to_type: str, ids: Sequence[str]) -> dict[str, list[Any]]:
        """Each record's associations to ``to_type`` (v4 batch read, 100 per call): by record id, the
        ``to`` entries (``.to_object_id``, ``.association_types[].type_id``). A record with none is absent."""
        models = _sdk_models("hubspot.crm.associations.v4")
        api = self._associations
        found: dict[str, list[Any]] = {}
        for chunk in chunks(list(ids), BATCH_LIMIT):
            request = models.BatchInputPublicFetchAssociationsBatchRequest(
                inputs=[models.PublicFetchAssociationsBatchRequest(id=i) for i in chunk]
            )
            what = f"read the {to_type} of {from_type}"
            answer = self._send(what, api.get_page_with_http_info, from_type, to_type, request)
            for result in answer.results or []:
                found[str(result._from.id)] = list(result.to or [])
        return found

    def owner(self, owner_id: str, *, by: str = "id") -> Any:
        """An owner by its owner id, or (``by="userId"``) by the HubSpot user behind it."""
        return self._send(
            f"read owner {owner_id}",
            self._owners.get_by_id_with_http_info,
            owner_id,
            id_property=by,
        )

    def search(
        self, object_type: str, filters: Sequence[Mapping[str, str]], properties: Sequence[str]
    ) -> Iterator[Any]:
        """Every record matching all ``filters``, page by page (each page one search request)."""
        return self.search_any(object_type, [filters], properties)

    def search_any(
        self,
        object_type: str,
        groups: Sequence[Sequence[Mapping[str, str]]],
        properties: Sequence[str],
    ) -> Iterator[Any]:
        """Every record matching all filters of any group (HubSpot: at most 5), page by page."""
        models = _models(object_type)
        filter_groups = [models.FilterGroup(filters=[models.Filter(**f) for f in group]) for group in groups]
        after: str | None = None
        while True:
            request = models.PublicObjectSearchRequest(
                filter_groups=filter_groups,
                properties=list(properties),
                limit=SEARCH_PAGE,
                after=after,
            )
            api = self._api(object_type, "search_api")
            page = self._send(f"search {object_type}", api.do_search_with_http_info, request, search=True)
            yield from page.results
            after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                return

    # --- writes ------------------------------------------------------------

    def create_batch(self, object_type: str, inputs: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One batch/create call for up to 100 inputs ({"properties", "associations"} each)."""
        if len(inputs) > BATCH_LIMIT:
            raise ValueError(f"at most {BATCH_LIMIT} inputs per batch call")
        models = _models(object_type)
        batch = models.BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[_create_input(models, models.SimplePublicObjectBatchInputForCreate, i) for i in inputs]
        )
        api = self._api(object_type, "batch_api")
        created = self._send(f"create {object_type}", api.create_with_http_info, batch)
        return list(created.results)

    def create(self, object_type: str, data: Mapping[str, Any]) -> Any:
        models = _models(object_type)
        body = _create_input(models, models.SimplePublicObjectInputForCreate, data)
        api = self._api(object_type, "basic_api")
        return self._send(f"create a {object_type[:-1]}", api.create_with_http_info, body)

    def update(self, object_type: str, object_id: str, properties: Mapping[str, str]) -> None:
        body = _models(object_type).SimplePublicObjectInput(properties=dict(properties))
        api = self._api(object_type, "basic_api")
        self._send(f"update {object_type} {object_id}", api.update_with_http_info, object_id, body)

    def update_batch(
        self, object_type: str, inputs: Sequence[tuple[str, Mapping[str, str]]]
    ) -> dict[str, CrmError]:
        """One batch/update call for up to 100 records (each id once): the records HubSpot could not
        update, by id (its 207 answer); a bad value refuses the whole call (CrmPermanent 400)."""
        if len(inputs) > BATCH_LIMIT:
            raise ValueError(f"at most {BATCH_LIMIT} inputs per batch call")
        models = _models(object_type)
        batch = models.BatchInputSimplePublicObjectBatchInput(
            inputs=[models.SimplePublicObjectBatchInput(id=i, properties=dict(p)) for i, p in inputs]
        )
        api = self._api(object_type, "batch_api")
        answer = self._send(f"update {object_type}", api.update_with_http_info, batch)
        return refused_ids(answer, f"update {object_type}")

    # --- files (the offboarding record) -------------------------------------

    def upload_file(self, path: str, *, name: str, folder_path: str, options: Mapping[str, Any]) -> Any:
        """POST /files/v3/files (multipart): the file at ``path`` as ``name`` in ``folder_path``.

        The SDK reads the file part from a path on disk (``ApiClient.files_parameters``), so the
        caller writes the content to a file first; ``options`` is the JSON part (``access`` is
        required by HubSpot)."""
        return self._send(
            f"upload the file {name}",
            self._files.upload_with_http_info,
            file=path,
            file_name=name,
            folder_path=folder_path,
            options=json.dumps(dict(options)),
        )

    def search_files(self, name: str) -> list[Any]:
        """GET /files/v3/files/search: the files whose name contains ``name`` (one page of 100)."""
        found = self._send(f"search the files named {name}", self._files.do_search_with_http_info, name=name)
        return list(found.results or [])

    # --- properties (offboard hubspot setup) -----------------------------

    def get_property(self, object_type: str, name: str) -> Any | None:
        try:
            return self._send(
                f"read the {object_type} property {name}",
                self._properties.get_by_name_with_http_info,
                object_type,
                name,
            )
        except CrmPermanent as exc:
            if exc.status == 404:
                return None
            raise

    def create_property(self, object_type: str, definition: Mapping[str, Any]) -> Any:
        models = _sdk_models("hubspot.crm.properties")
        options = [models.OptionInput(hidden=False, **option) for option in definition.get("options", [])]
        body = models.PropertyCreate(**{**definition, "options": options or None})
        return self._send(
            f"create the {object_type} property {definition['name']}",
            self._properties.create_with_http_info,
            object_type,
            body,
        )

    # --- the one door every call goes through ------------------------------

    def _send(
        self, what: str, call: Callable[..., Any], *args: Any, search: bool = False, **kwargs: Any
    ) -> Any:
        waits, renewed = 0, False
        while True:
            self.limits.acquire(search=search)
            token = self._token() if self._token is not None else None
            try:
                data, status, headers = call(*args, _request_timeout=TIMEOUT, **_auth(token), **kwargs)
            except Exception as exc:
                error = translate(exc, what)
                metrics.crm_call("hubspot", getattr(error, "status", None) or "error")
                if token is not None and error.status == 401 and not renewed:
                    # HubSpot refused the token before the expiry it announced (clocks drift, the
                    # portal reinstalled, the install revoked): renew it once and try again; a
                    # revoked install's refresh is refused, which disconnects the portal.
                    renewed = True
                    self._renew(token)
                    continue
                wait = _wait_here(error, waits)
                if wait is None:
                    raise error from exc
                self.limits.hold(wait)
                waits += 1
                continue
            metrics.crm_call("hubspot", status)
            self.limits.observe(headers)
            return data

    def _renew(self, refused: str) -> None:
        renew = getattr(self._token, "renew", None)
        if renew is not None:
            renew(refused)

    def _api(self, object_type: str, kind: str) -> Any:
        # Each SDK API object owns a connection pool: make each once, not per call.
        key = (object_type, kind)
        if key not in self._apis:
            self._apis[key] = getattr(self._discovery(object_type), kind)
        return self._apis[key]

    def _discovery(self, object_type: str) -> Any:
        crm = self._client.crm
        if object_type in ("tasks", "notes"):
            return getattr(crm.objects, object_type)
        return getattr(crm, object_type)

    @cached_property
    def _owners(self) -> Any:
        return self._client.crm.owners.owners_api

    @cached_property
    def _associations(self) -> Any:
        return self._client.crm.associations.v4.batch_api

    @cached_property
    def _properties(self) -> Any:
        return self._client.crm.properties.core_api

    @cached_property
    def _files(self) -> Any:
        return self._client.files.files_api


def _auth(token: str | None) -> dict[str, Any]:
    """The SDK's per-request authentication (``_request_auth``) for an OAuth token: each request
    names its own token, so threads sharing the client never see another's, and nothing shared
    is changed between requests."""
    if token is None:
        return {}
    return {
        "_request_auth": {
            "type": "oauth2",
            "in": "header",
            "key": "Authorization",
            "value": f"Bearer {token}",
        }
    }


def _wait_here(error: Exception, attempt: int) -> float | None:
    """Seconds to wait a 429 out here, or None to hand the error to the caller (the worker's queue)."""
    if not isinstance(error, CrmRateLimited) or error.retry_after is None:
        return None
    if error.retry_after > LONGEST_WAIT or attempt >= RATE_LIMIT_WAITS:
        return None
    return error.retry_after


def _models(object_type: str) -> Any:
    return _sdk_models(_MODELS[object_type])


@cache
def _sdk_models(module: str) -> _Models:
    return _Models(importlib.import_module(module))


class _Models:
    """An SDK module's models, each made with the module's one shared ``Configuration``.

    Why. A generated model made without a configuration builds a new one (it sets the SDK's
    loggers' levels and counts the CPUs): about 30 µs a model against 0.5 µs with one given,
    and a task written takes five or six models, so on a burst it was some 5% of the worker's
    time. A model only reads ``client_side_validation`` from it, and never changes it.
    """

    def __init__(self, module: Any) -> None:
        self._module = module
        self._configuration = module.Configuration()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return partial(getattr(self._module, name), local_vars_configuration=self._configuration)


def _create_input(models: Any, kind: Any, data: Mapping[str, Any]) -> Any:
    associations = [
        models.PublicAssociationsForObject(
            to=models.PublicObjectId(id=link["to"]["id"]),
            types=[
                models.AssociationSpec(
                    association_category=t["associationCategory"], association_type_id=t["associationTypeId"]
                )
                for t in link["types"]
            ],
        )
        for link in data.get("associations", [])
    ]
    return kind(properties=dict(data["properties"]), associations=associations or None)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def refused_ids(answer: Any, what: str) -> dict[str, CrmError]:
    """The records a batch answer (207) lists as failed, by id, each with HubSpot's reason."""
    refused: dict[str, CrmError] = {}
    for error in getattr(answer, "errors", None) or []:
        category = str(getattr(error, "category", "") or "")
        status = 404 if category == "OBJECT_NOT_FOUND" else 400
        message = str(getattr(error, "message", "") or "no message")
        detail = {"category": category, "message": message, "context": getattr(error, "context", None)}
        for object_id in (getattr(error, "context", None) or {}).get("ids") or []:
            text = f"HubSpot rejected the request to {what} {object_id} ({status}): {message}"
            refused[str(object_id)] = CrmPermanent(text, status=status, detail=detail)
    return refused
