"""A small client of the Dagster webserver's GraphQL API, for ``hedge backfill`` and the tests.

Backfills go through the webserver rather than straight into the instance so that they are the
same object the UI launches: an *asset* backfill (``launchPartitionBackfill`` with an asset
selection and partition names), which the daemon's backfill loop turns into runs, honouring
each asset's ``BackfillPolicy`` and the dependencies inside the selection. (A job backfill
would ignore those, see docs/notes.md, Dagster.) Only the standard library is used: the CLI
must start fast and the webserver is on loopback.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

DEFAULT_URL = "http://127.0.0.1:3000"
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

ASSET_NODES = """
query HedgeAssetNodes {
  assetNodes {
    assetKey { path }
    isPartitioned
    partitionDefinition { name }
    partitionKeys
  }
}
"""

LAUNCH = """
mutation HedgeLaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

BACKFILL = """
query HedgeBackfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id
      status
      partitionNames
      error { message }
      runs { runId status tags { key value } }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


class UIError(RuntimeError):
    """The webserver is unreachable, or refused or failed a request; the message says which."""


@dataclass(frozen=True)
class BackfillState:
    backfill_id: str
    status: str
    partitions: list[str]
    # asset key -> (targeted, in progress, materialized, failed)
    assets: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status in {"COMPLETED", "COMPLETED_SUCCESS"} and not any(
            failed for *_, failed in self.assets.values()
        )


class UIClient:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, document: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": document, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300]
            raise UIError(f"{self.url}/graphql answered HTTP {exc.code}: {detail!r}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UIError(
                f"no Dagster webserver at {self.url} ({reason}); start one with `hedge ui`"
            ) from None
        if payload.get("errors"):
            raise UIError("; ".join(e.get("message", str(e)) for e in payload["errors"]))
        return payload["data"]

    def weekly_code_assets(self) -> dict[str, list[str]]:
        """Assets partitioned by ``weekly_code`` -> their partition keys (the weekly codes)."""
        nodes = self.query(ASSET_NODES)["assetNodes"]
        return {
            "/".join(node["assetKey"]["path"]): node["partitionKeys"]
            for node in nodes
            if node["isPartitioned"]
            and (node["partitionDefinition"] or {}).get("name") == "weekly_code"
        }

    def launch_asset_backfill(
        self, assets: list[str], codes: list[str], title: str | None = None
    ) -> str:
        """Launch one asset backfill of ``codes`` for ``assets``; returns its id."""
        params = {
            "assetSelection": [{"path": key.split("/")} for key in assets],
            "partitionNames": codes,
            "tags": [{"key": "hedge/trigger", "value": "hedge-backfill"}],
            "title": title,
        }
        result = self.query(LAUNCH, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise UIError(f"backfill refused ({result['__typename']}): {result.get('message')}")
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> BackfillState:
        result = self.query(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise UIError(f"backfill {backfill_id}: {result.get('message')}")
        statuses = (result.get("assetBackfillData") or {}).get("assetBackfillStatuses") or []
        return BackfillState(
            backfill_id=result["id"],
            status=result["status"],
            partitions=result.get("partitionNames") or [],
            assets={
                "/".join(s["assetKey"]["path"]): (
                    s["numPartitionsTargeted"],
                    s["numPartitionsInProgress"],
                    s["numPartitionsMaterialized"],
                    s["numPartitionsFailed"],
                )
                for s in statuses
                if "numPartitionsTargeted" in s
            },
            runs=result.get("runs") or [],
            error=(result.get("error") or {}).get("message"),
        )

    def wait_for_backfill(
        self, backfill_id: str, timeout: float, poll: float = 2.0, on_change=None
    ) -> BackfillState:
        """Poll until the backfill reaches a terminal status; ``on_change(state)`` on each new
        state. Raises ``TimeoutError`` with the last state when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            state = self.backfill(backfill_id)
            seen = (state.status, state.assets)
            if on_change and seen != last:
                on_change(state)
            last = seen
            if state.done:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"backfill {backfill_id} still {state.status} after {timeout:.0f} s"
                )
            time.sleep(poll)
