#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/corpus/<target>/): one event of each kind in the
contract's shape (and an escaped variant, for the serde path), list queries, signature headers
and NATS protocol lines. Run from the repository root; the fuzzer grows its own corpus beside
it, under fuzz/target/corpus."""
import json, os, re

src = open('src/core/events.rs').read()
start = src.index("pub const ALL: [Kind; 13] = [")
block = src[start:src.index("];", start)]
# Kind::ALL's order: the first byte of an event_decode input picks the subject's kind by it.
kinds = [re.sub(r'(?<!^)(?=[A-Z])', '_', n).lower() for n in re.findall(r'Kind::(\w+)', block)]

def put(target, name, data):
    os.makedirs(f'fuzz/corpus/{target}', exist_ok=True)
    with open(f'fuzz/corpus/{target}/{name}', 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())

base = {"specversion": "1.0", "id": "5c1d0c2e-8f0a-4d5e-9a53-0b3b7c1d2e01", "source": "executor-1",
        "time": "2023-07-24T12:13:49.451Z", "datacontenttype": "application/json"}
for i, k in enumerate(kinds):
    data = {"project_id": "proj-a", "order_id": 74}
    if k == "created":
        data.update({"execute_uuid": "SCT2023", "order_name": "071201", "creator": "alice",
                     "region_ids": "cn-north-4", "job_type": "SCRIPT", "script_uuid": "s-1",
                     "script_name": "patch", "script_version_uuid": 3, "script_version_name": "v3",
                     "execute_param": {"timeout": 300, "success_rate": 100, "script_params": [
                         {"param_name": "pw", "param_value": "x", "sensitive": True, "param_order": 1}]},
                     "execute_batches": [{"batch_index": 1, "rotation_strategy": "CONTINUE",
                                          "properties": "{}", "target_instances": [{
                                              "instance_id": 10, "resource_id": "r1",
                                              "region_id": "cn-north-4", "provider": "ECS",
                                              "type": "CLOUDSERVER", "agent_sn": "sn",
                                              "agent_status": "ONLINE"}]}]})
    if k.startswith("instance_") or k == "batch_started":
        data["batch_index"] = 1
    if k.startswith("instance_"):
        data.update({"instance_id": 10, "message": "exit 0"})
    if k == "operation_requested":
        data.update({"operation_type": "CANCEL_ORDER", "execute_uuid": "SCT2023", "requested_by": "alice"})
    ev = dict(base, type="coc.job.script." + k, data=data)
    put('event_decode', k, bytes([i]) + json.dumps(ev, separators=(',', ':')).encode())
    put('event_decode', k + '-escaped', bytes([i]) + json.dumps(ev).replace('proj-a', 'proj\\u002da').encode())

for n, q in enumerate(["limit=10&marker=70&status=FINISHED",
                       "creator=alice&name_like=k&start_time=1689751168547&end_time=1689751169000",
                       "order_by=gmt_created&sort=asc&job_type=SCRIPT", "limit=abc",
                       "status=READY,PROCESSING&x=1", "%zz=1&limit=%31%30"]):
    put('list_query', f'q{n}', q)
put('authorization', 'a0', "SDK-HMAC-SHA256 Access=TESTAK0000000000000A, "
    "SignedHeaders=content-type;host;x-sdk-date, Signature=6a2c0ab5d6f1a3b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b")
put('authorization', 'a1', "SDK-HMAC-SHA256 Access=, SignedHeaders=, Signature=")
put('wire', 'msg', b"MSG coc.job.script.proj-a.created 1 $JS.ACK.s.c.1.1.1.1.0 5\r\nhello\r\n")
put('wire', 'hmsg', b"HMSG coc.a 1 r 23 28\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n")
put('wire', 'status', b"HMSG _INBOX.x 1 16 16\r\nNATS/1.0 408\r\n\r\n\r\n")
put('wire', 'ping', b"PING\r\n")
put('wire', 'err', b"-ERR 'Unknown Protocol Operation'\r\n")
# A record: version 4, then a ticket's fields (see src/core/record.rs).
put('record_decode', 'r0', bytes([4, 6]) + b"proj-a" + bytes([74, 1]) + b"n" + bytes([1]) + b"u"
    + bytes([1]) + b"c" + bytes([1]) + b"r" + bytes([6]) + b"SCRIPT" + bytes([2, 0, 0, 0, 0, 0, 0, 0]))
put('binary_event', 'empty', b"")
