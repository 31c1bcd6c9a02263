"""The rest of COC's script-ticket family through the official SDK, unchanged, against the daemon
binary fed by events (contract v1.1): ticket info, batches, a batch's instances paged as
Terraform pages them, statistics, and operations, whose requests a subscriber receives as the
executor would.
"""

import hashlib
import json
import socket
import urllib.request

import jsonschema
import pytest
from huaweicloudsdkcoc.v1 import (
    CocClient,
    GetScriptJobBatchRequest,
    GetScriptJobInfoRequest,
    GetScriptJobStatisticsRequest,
    JobScriptOrderOperationBody,
    ListScriptJobBatchesRequest,
    ListScriptJobsRequest,
    OperateScriptJobRequest,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions

from test_official_sdk import BINARY, event, readyz, running_ledger, wait_for

AK, SK = "SDKFAMILYACCESSKEY01", "sdk-family-secret"
READER_AK, READER_SK = "SDKFAMILYREADER00001", "sdk-family-reader-secret"
TOKEN = "family-operator-token"
T0 = 1_700_000_000_000
UUID = "SCTFAMILY1"
STATUSES = ["READY", "PROCESSING", "ABNORMAL", "CANCELED", "FINISHED"]


def plan():
    """Batch 1: 150 hosts (ids 1000..1149), more than one page of 100; batch 2: 3 hosts."""
    def host(i):
        return {"instance_id": i, "resource_id": f"ecs-{i}", "provider": "ECS", "region_id": "cn-north-4",
                "type": "CLOUD_SERVER", "custom_attributes": [{"key": "env", "value": "prod"}],
                "agent_sn": f"sn-{i}", "agent_status": "ONLINE",
                "properties": {"host_name": f"web-{i}", "fixed_ip": f"10.0.{i // 256}.{i % 256}",
                               "region_id": "cn-north-4", "zone_id": "cn-north-4a", "project_id": "demo"}}
    return {
        "script_uuid": "SC-install", "script_name": "install-nginx", "script_version_uuid": 42,
        "script_version_name": "v42",
        "execute_param": {"resourceful": False, "timeout": 300, "success_rate": 95.5, "execute_user": "root",
                          "script_params": [
                              {"param_name": "pkg", "param_value": "nginx", "param_order": 1},
                              {"param_name": "token", "param_value": "hunter2-secret", "param_order": 2,
                               "sensitive": True}]},
        "execute_batches": [
            {"batch_index": 1, "rotation_strategy": "PAUSE", "properties": "{\"note\":\"first\"}",
             "target_instances": [host(i) for i in range(1000, 1150)]},
            {"batch_index": 2, "rotation_strategy": "CONTINUE",
             "target_instances": [host(i) for i in (2000, 2001, 2002)]},
        ],
    }


def history():
    """The executor's events, and what each instance must then be: (status, started, ended, message)."""
    ev = [event("created", "demo", 1, T0, execute_uuid=UUID, order_name="family", creator="alice",
                region_ids="cn-north-4", **plan()),
          event("started", "demo", 1, T0 + 1),
          event("batch_started", "demo", 1, T0 + 2, batch_index=1)]
    expected = {i: ("READY", None, None, None) for i in list(range(1000, 1150)) + [2000, 2001, 2002]}
    for n, i in enumerate(range(1000, 1150)):
        start = T0 + 10 + n
        e = event("instance_started", "demo", 1, start, batch_index=1, instance_id=i)
        e["id"] += f"-{i}"
        ev.append(e)
        expected[i] = ("PROCESSING", start, None, None)
        if n < 120:
            kind, status = ("instance_finished", "FINISHED") if n % 10 else ("instance_abnormal", "ABNORMAL")
            msg = f"exit {0 if status == 'FINISHED' else 1} on web-{i}"
            e = event(kind, "demo", 1, start + 500, batch_index=1, instance_id=i, message=msg)
            e["id"] += f"-{i}"
            ev.append(e)
            expected[i] = (status, start, start + 500, msg)
    return ev, expected


def test_the_events_follow_the_published_json_schema():
    schema = json.loads((BINARY.parents[2] / "docs" / "events.schema.json").read_text())
    events, _ = history()
    for e in events:
        jsonschema.validate(e, schema)
    bad = dict(events[0], data=dict(events[0]["data"], script_version_uuid="v42"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def client_for(url, ak, sk):
    return (CocClient.new_builder().with_credentials(BasicCredentials(ak, sk, "demo"))
            .with_endpoints([url]).build())


class Subscriber:
    """A plain NATS core subscriber (the protocol is text lines), as an executor subscribes."""

    def __init__(self, port, subject):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.line()  # INFO
        self.sock.sendall(f'CONNECT {{"verbose":false}}\r\nSUB {subject} 1\r\nPING\r\n'.encode())
        while self.line() != b"PONG":
            pass

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "the NATS server closed the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def next_message(self):
        while True:
            line = self.line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith(b"MSG "):
                parts = line.split()
                size = int(parts[-1])
                while len(self.buf) < size + 2:
                    self.buf += self.sock.recv(65536)
                body, self.buf = self.buf[:size], self.buf[size + 2:]
                return parts[1].decode(), json.loads(body)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("family")
    (tmp / "sk").write_text(SK + "\n")
    (tmp / "reader-sk").write_text(READER_SK + "\n")
    auth = f"""principals = [
  {{ name = "operator", projects = ["demo"], actions = ["coc:job:list", "coc:job:get", "coc:job:operate"] }},
  {{ name = "reader", projects = ["demo"], actions = ["coc:job:list", "coc:job:get"] }},
]
tokens = [{{ principal = "operator", sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}" }}]
access_keys = [
  {{ principal = "operator", access_key = "{AK}", secret_key_file = "{tmp / 'sk'}" }},
  {{ principal = "reader", access_key = "{READER_AK}", secret_key_file = "{tmp / 'reader-sk'}" }},
]"""
    with running_ledger(tmp, auth) as (url, port, emit):
        events, expected = history()
        emit(events)
        wait_for(lambda: readyz(url)["applied_seq"] == len(events), "ingestion")
        yield dict(url=url, port=port, expected=expected, emit=emit)


def all_instances(client, batch_index, status=None):
    """Terraform's loop: limit=100, marker = the last id, until a page comes back empty."""
    seen, marker, pages = [], None, 0
    while True:
        req = GetScriptJobBatchRequest(execute_uuid=UUID, batch_index=batch_index, limit=100, status=status)
        if marker is not None:
            req.marker = marker
        page = client.get_script_job_batch(req).data
        pages += 1
        assert pages < 10, "the paging does not end"
        if not page.execute_instances:
            return page, seen
        seen += page.execute_instances
        marker = page.execute_instances[-1].id


def test_info_batches_instances_and_statistics_through_the_sdk(family):
    client = client_for(family["url"], AK, SK)
    expected = family["expected"]

    listed = client.list_script_jobs(ListScriptJobsRequest(limit=10)).data
    assert [(t.order_id, t.execute_uuid, t.status) for t in listed.data] == [(1, UUID, "PROCESSING")]

    info = client.get_script_job_info(GetScriptJobInfoRequest(execute_uuid=UUID)).data
    assert (info.execute_uuid, info.creator, info.status, info.gmt_created) == (UUID, "alice", "PROCESSING", T0)
    assert (info.gmt_finished, info.execute_costs) == (None, None)
    p = info.properties
    assert (p.script_uuid, p.script_name, p.script_version_uuid, p.script_version_name) == \
        ("SC-install", "install-nginx", 42, "v42")
    assert p.current_execute_batch_index == 1
    x = p.execute_param
    assert (x.resourceful, x.timeout, x.success_rate, x.execute_user) == (False, 300, 95.5, "root")
    assert [(s.param_name, s.param_value, s.param_order) for s in x.script_params] == \
        [("pkg", "nginx", 1), ("token", "******", 2)]

    batches = client.list_script_job_batches(ListScriptJobBatchesRequest(execute_uuid=UUID)).data
    assert [(b.batch_index, b.total_instances, b.rotation_strategy, b.properties) for b in batches] == \
        [(1, 150, "PAUSE", '{"note":"first"}'), (2, 3, "CONTINUE", None)]

    got = {}
    for b in (1, 2):
        page, instances = all_instances(client, b)
        assert page.batch_index == b and page.total_instances == len(instances)
        ids = [i.id for i in instances]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for i in instances:
            got[i.id] = (i.status, i.gmt_created, i.gmt_finished, i.message)
            s, start, end = expected[i.id][:3]
            assert i.execute_costs == (end - start if end else None)
            t = i.target_instance
            assert (t.resource_id, t.provider, t.region_id, t.type, t.agent_sn, t.agent_status) == \
                (f"ecs-{i.id}", "ECS", "cn-north-4", "CLOUD_SERVER", f"sn-{i.id}", "ONLINE")
            assert [(a.key, a.value) for a in t.custom_attributes] == [("env", "prod")]
            assert (t.properties.host_name, t.properties.zone_id) == (f"web-{i.id}", "cn-north-4a")
    assert got == expected

    # The status filter pages too, and totals stay the batch's.
    page, abnormal = all_instances(client, 1, status="ABNORMAL")
    assert [i.id for i in abnormal] == [i for i, e in sorted(expected.items()) if e[0] == "ABNORMAL"]
    assert page.total_instances == 150

    stats = client.get_script_job_statistics(GetScriptJobStatisticsRequest(execute_uuid=UUID)).data
    assert stats.total_instance == len(expected)
    by_status = {s.instance_status: (s.instance_count, s.batch_indexes) for s in stats.execute_statistics}
    want = {}
    for status in STATUSES:
        ids = [i for i, e in expected.items() if e[0] == status]
        batches_with = sorted({1 if i < 2000 else 2 for i in ids})
        want[status] = (len(ids), batches_with)
    assert by_status == want


def refused(client, op, code, **kw):
    with pytest.raises(exceptions.ClientRequestException) as e:
        client.operate_script_job(OperateScriptJobRequest(
            execute_uuid=UUID, body=JobScriptOrderOperationBody(operation_type=op, **kw)))
    assert (e.value.status_code, e.value.error_code) == (400, code), e.value.error_msg


def test_operations_are_checked_published_and_carried_out_by_the_executors_events(family):
    client = client_for(family["url"], AK, SK)
    sub = Subscriber(family["port"], "coc.job.script.demo.operation_requested")

    # What the projection says cannot be done is refused, and nothing is published.
    refused(client, "CONTINUE_ORDER", "COC.00040021")
    refused(client, "SKIP_BATCH", "COC.00040023", batch_index=9)
    refused(client, "CANCEL_INSTANCE", "COC.00040025", instance_id=1001)
    refused(client, "CANCEL_INSTANCE", "COC.00040024", instance_id=77)
    with pytest.raises(exceptions.ClientRequestException) as e:
        client_for(family["url"], READER_AK, READER_SK).operate_script_job(OperateScriptJobRequest(
            execute_uuid=UUID, body=JobScriptOrderOperationBody(operation_type="CANCEL_ORDER")))
    assert (e.value.status_code, e.value.error_code) == (403, "COC.00040301")

    answer = client.operate_script_job(OperateScriptJobRequest(
        execute_uuid=UUID, body=JobScriptOrderOperationBody(operation_type="CANCEL_INSTANCE",
                                                            batch_index=1, instance_id=1149)))
    assert answer.data == UUID
    subject, msg = sub.next_message()
    assert subject == "coc.job.script.demo.operation_requested"
    assert msg["type"] == "coc.job.script.operation_requested"
    schema = json.loads((BINARY.parents[2] / "docs" / "events.schema.json").read_text())
    jsonschema.validate(msg, schema)
    assert msg["data"] == {"project_id": "demo", "order_id": 1, "execute_uuid": UUID,
                           "operation_type": "CANCEL_INSTANCE", "batch_index": 1, "instance_id": 1149,
                           "requested_by": "operator"}

    answer = client.operate_script_job(OperateScriptJobRequest(
        execute_uuid=UUID, body=JobScriptOrderOperationBody(operation_type="CANCEL_ORDER")))
    assert answer.data == UUID
    _, msg = sub.next_message()
    assert msg["data"]["operation_type"] == "CANCEL_ORDER" and msg["data"]["requested_by"] == "operator"

    # The request alone changes nothing; the executor's `cancelled` does.
    info = client.get_script_job_info(GetScriptJobInfoRequest(execute_uuid=UUID)).data
    assert info.status == "PROCESSING"
    end = T0 + 60_000
    family["emit"]([event("cancelled", "demo", 1, end)])
    wait_for(lambda: client.get_script_job_info(GetScriptJobInfoRequest(execute_uuid=UUID)).data.status
             == "CANCELED", "the cancel to be folded")
    info = client.get_script_job_info(GetScriptJobInfoRequest(execute_uuid=UUID)).data
    assert (info.gmt_finished, info.execute_costs) == (end, 60_000)
    refused(client, "CANCEL_ORDER", "COC.00040020")
    refused(client, "PAUSE_ORDER", "COC.00040021")

    # The requests are in the ticket's history (extra keys the SDK ignores), with who asked.
    req = urllib.request.Request(f"{family['url']}/v1/job/script/orders/{UUID}",
                                 headers={"X-Auth-Token": TOKEN, "x-project-id": "demo"})
    with urllib.request.urlopen(req) as r:
        events = json.load(r)["data"]["events"]
    notes = [e.get("note") for e in events if e["type"] == "coc.job.script.operation_requested"]
    assert notes == ["CANCEL_INSTANCE batch 1 instance 1149, requested by operator",
                     "CANCEL_ORDER, requested by operator"]
    assert all(e["outcome"] == "applied" for e in events)
    stats = client.get_script_job_statistics(GetScriptJobStatisticsRequest(execute_uuid=UUID)).data
    by_status = {s.instance_status: s.instance_count for s in stats.execute_statistics}
    # Whatever was still running or waiting is CANCELED with the ticket.
    assert by_status["READY"] == 0 and by_status["PROCESSING"] == 0
    assert by_status["CANCELED"] == 30 + 3
