use super::*;

const PREFIX: &str = "coc.job.script";

pub(super) fn created() -> Event {
    Event {
        id: "e-1".into(),
        source: "executor-a".into(),
        kind: Kind::Created,
        time_ms: 1_690_200_829_451,
        project: ProjectId::parse("p1").unwrap(),
        order_id: 74,
        created: Some(CreatedData {
            execute_uuid: "SCT1".into(),
            order_name: "071201".into(),
            creator: "alice".into(),
            region_ids: "cn-north-4".into(),
            job_type: "SCRIPT".into(),
            plan: None,
        }),
        detail: Detail::None,
    }
}

fn decode_value(subject: &str, v: &Value) -> Result<Event, DecodeError> {
    decode(subject, &serde_json::to_vec(v).unwrap(), PREFIX, 64 * 1024)
}

#[test]
fn encode_then_decode_round_trips() {
    let e = created();
    let got = decode(&e.subject(PREFIX), &e.to_bytes(), PREFIX, 65536).unwrap();
    assert_eq!(got.id, e.id);
    assert_eq!(got.kind, Kind::Created);
    assert_eq!(got.time_ms, e.time_ms);
    assert_eq!(got.order_id, 74);
    assert_eq!(got.created, e.created);
}

#[test]
fn time_keeps_milliseconds_and_drops_finer_digits() {
    assert_eq!(
        format_time_ms(1_690_200_829_451),
        "2023-07-24T12:13:49.451Z"
    );
    assert_eq!(
        parse_time_ms("2023-07-24T12:13:49.451999Z"),
        Some(1_690_200_829_451)
    );
    assert_eq!(
        parse_time_ms("2023-07-24T20:13:49.451+08:00"),
        Some(1_690_200_829_451)
    );
    assert_eq!(parse_time_ms("yesterday"), None);
}

#[test]
fn the_usual_shape_is_read_as_the_general_parser_reads_it() {
    // Every month's edges in leap and common years, centuries and the first and last years,
    // every fraction length, and fields one past their range.
    let mut checked = 0;
    let mut fast = 0;
    for year in [
        0, 1, 1900, 1969, 1970, 1999, 2000, 2023, 2024, 2100, 2400, 9999,
    ] {
        for month in 0..=13 {
            for day in [0, 1, 15, 28, 29, 30, 31, 32] {
                for (h, m, sec) in [(0, 0, 0), (23, 59, 59), (24, 0, 0), (0, 60, 0), (0, 0, 60)] {
                    for fraction in [
                        "",
                        ".5",
                        ".45",
                        ".451",
                        ".4519",
                        ".451999999",
                        ".4519999999",
                        ".",
                    ] {
                        let raw = format!(
                            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}{fraction}Z"
                        );
                        let want = parse_rfc3339_ms(&raw);
                        assert_eq!(parse_time_ms(&raw), want, "{raw}");
                        if let Some(ms) = parse_utc_ms(raw.as_bytes()) {
                            assert_eq!(Some(ms), want, "{raw}");
                            fast += 1;
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(
        fast > checked / 10,
        "the fast path took {fast} of {checked}"
    );
    // Shapes it leaves to the general parser, which still reads the valid ones.
    for raw in [
        "2023-07-24T20:13:49.451+08:00",
        "2023-07-24t12:13:49Z",
        "2023-07-24T12:13:49z",
        "2023-07-24T12:13:49.Z",
        "2023-07-24T12:13:4xZ",
        "2023-07-24 12:13:49Z",
        "+2023-07-24T12:13:49Z",
        "2023-07-24T12:13:49",
    ] {
        assert_eq!(parse_utc_ms(raw.as_bytes()), None, "{raw}");
        assert_eq!(parse_time_ms(raw), parse_rfc3339_ms(raw), "{raw}");
    }
}

#[test]
fn job_type_defaults_to_script_and_unknown_fields_are_ignored() {
    let e = created();
    let mut v = e.to_json();
    v["data"].as_object_mut().unwrap().remove("job_type");
    v["data"]["extra"] = json!({"nested": true});
    v["extension"] = json!("x");
    let got = decode_value(&e.subject(PREFIX), &v).unwrap();
    assert_eq!(got.created.unwrap().job_type, "SCRIPT");
}

#[test]
fn every_malformation_has_its_own_reason() {
    let e = created();
    let subject = e.subject(PREFIX);
    let base = e.to_json();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        decode_value(&subject, &v).unwrap_err().code()
    };
    assert_eq!(
        decode(&subject, b"{not json", PREFIX, 1024)
            .unwrap_err()
            .code(),
        "malformed_json"
    );
    assert_eq!(
        decode(&subject, b"[1,2]", PREFIX, 1024).unwrap_err().code(),
        "malformed_json"
    );
    assert_eq!(
        decode(&subject, &[b' '; 2000], PREFIX, 1024)
            .unwrap_err()
            .code(),
        "oversized"
    );
    assert_eq!(
        with(&|v| {
            v.as_object_mut().unwrap().remove("id");
        }),
        "invalid_envelope"
    );
    assert_eq!(with(&|v| v["id"] = json!(7)), "invalid_envelope");
    assert_eq!(with(&|v| v["id"] = json!("")), "invalid_envelope");
    assert_eq!(with(&|v| v["source"] = json!("")), "invalid_envelope");
    assert_eq!(
        with(&|v| v["specversion"] = json!("0.3")),
        "unsupported_specversion"
    );
    assert_eq!(
        with(&|v| v["type"] = json!("coc.job.script.exploded")),
        "unknown_kind"
    );
    assert_eq!(
        with(&|v| v["type"] = json!("com.other.created")),
        "unknown_kind"
    );
    assert_eq!(with(&|v| v["time"] = json!("12:00")), "invalid_time");
    assert_eq!(with(&|v| v["data"] = json!("x")), "invalid_data");
    assert_eq!(
        with(&|v| v["data"]["order_id"] = json!("74")),
        "invalid_data"
    );
    assert_eq!(
        with(&|v| v["data"]["order_id"] = json!(1.5)),
        "invalid_data"
    );
    assert_eq!(with(&|v| v["data"]["order_id"] = json!(-3)), "invalid_data");
    assert_eq!(with(&|v| v["data"]["order_id"] = json!(0)), "invalid_data");
    assert_eq!(
        with(&|v| v["data"]["project_id"] = json!("a.b")),
        "invalid_data"
    );
    assert_eq!(
        with(&|v| {
            v["data"].as_object_mut().unwrap().remove("creator");
        }),
        "invalid_data"
    );
    assert_eq!(
        with(&|v| v["data"]["region_ids"] = json!(["a"])),
        "invalid_data"
    );
}

#[test]
fn subject_must_name_the_events_project_and_kind() {
    let e = created();
    let bytes = e.to_bytes();
    for subject in [
        "coc.job.script.p2.created",
        "coc.job.script.p1.started",
        "coc.job.other.p1.created",
    ] {
        assert_eq!(
            decode(subject, &bytes, PREFIX, 65536).unwrap_err().code(),
            "subject_mismatch",
            "{subject}"
        );
    }
}

#[test]
fn the_scanner_agrees_with_serde_wherever_it_answers() {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut e = created();
    seeds.push((e.subject(PREFIX), e.to_bytes()));
    e.created.as_mut().unwrap().order_name = "数据库 \"quoted\" naïve".into();
    seeds.push((e.subject(PREFIX), e.to_bytes()));
    let mut v = e.to_json();
    v["ext"] = json!(-1.5e3);
    v["flag"] = json!(true);
    v["data"]["n"] = json!(0);
    seeds.push((e.subject(PREFIX), serde_json::to_vec_pretty(&v).unwrap()));
    e.kind = Kind::Finished;
    e.created = None;
    seeds.push((e.subject(PREFIX), e.to_bytes()));
    let interesting = b"\"\\{}[],: 0123456789-+.eEntfu\x01\xc3a";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut scanned, mut accepted) = (0, 0);
    for round in 0..30_000 {
        let (subject, seed) = &seeds[round % seeds.len()];
        let mut p = seed.clone();
        for _ in 0..1 + rnd(3) {
            let at = rnd(p.len());
            match rnd(4) {
                0 => {
                    p.remove(at);
                }
                1 => p.insert(at, interesting[rnd(interesting.len())]),
                2 => p[at] = interesting[rnd(interesting.len())],
                _ => {
                    let end = (at + 1 + rnd(20)).min(p.len());
                    let piece = p[at..end].to_vec();
                    p.splice(at..at, piece);
                }
            }
        }
        let fast = decode(subject, &p, PREFIX, 65536);
        let slow = decode_with_serde(subject, &p, PREFIX);
        assert_eq!(fast, slow, "{}", String::from_utf8_lossy(&p));
        if scan::fields(&p).is_some() {
            scanned += 1;
            accepted += usize::from(fast.is_ok());
        }
    }
    // Edges that random edits seldom reach: each one changed in the compact seed.
    let (subject, compact) = &seeds[0];
    let text = String::from_utf8(compact.clone()).unwrap();
    let edges = [
        ("\"order_id\":74", "\"order_id\":074"),
        ("\"order_id\":74", "\"order_id\":74.0"),
        ("\"order_id\":74", "\"order_id\":7e1"),
        ("\"order_id\":74", "\"order_id\":-74"),
        ("\"order_id\":74", "\"order_id\":18446744073709551616"),
        ("\"order_id\":74", "\"order_id\":null"),
        ("\"order_id\":74", "\"order_id\":74,\"order_id\":75"),
        ("\"creator\":\"alice\"", "\"creator\":\"al\\u0069ce\""),
        ("\"creator\":\"alice\"", "\"creator\":null"),
        (
            "\"creator\":\"alice\"",
            "\"creator\":\"alice\",\"x\":{\"y\":[1]}",
        ),
        ("\"creator\":\"alice\"", "\"creator\":\"alice\",\"x\":01"),
        ("\"creator\":\"alice\"", "\"creator\":\"alice\",\"x\":1.e5"),
        (
            "\"creator\":\"alice\"",
            "\"creator\":\"alice\",\"x\":-0.5E+3",
        ),
        ("\"creator\":\"alice\"", "\"creator\":\"alice\",\"x\":nul"),
        ("\"id\":\"e-1\"", "\"id\":\"e-1\",\"id\":\"e-2\""),
        ("\"id\":\"e-1\"", "\"id\":\"e\u{1}1\""),
        ("\"id\":\"e-1\"", "\"extension\":\"x\",\"id\":\"e-1\""),
    ];
    for (from, to) in edges {
        assert!(text.contains(from), "{from}");
        let p = text.replacen(from, to, 1);
        assert_eq!(
            decode(subject, p.as_bytes(), PREFIX, 65536),
            decode_with_serde(subject, p.as_bytes(), PREFIX),
            "{p}"
        );
    }
    for trailing in [" ", "\n", " x", "{}", ","] {
        let p = format!("{text}{trailing}");
        assert_eq!(
            decode(subject, p.as_bytes(), PREFIX, 65536),
            decode_with_serde(subject, p.as_bytes(), PREFIX),
            "{p}"
        );
    }
    for (subject, seed) in &seeds {
        assert!(scan::fields(seed).is_some() || seed.contains(&b'\\'));
        assert_eq!(
            decode(subject, seed, PREFIX, 65536),
            decode_with_serde(subject, seed, PREFIX)
        );
    }
    // The mutations reach the scanner often, and some of what it takes is still valid.
    assert!(scanned > 3_000, "the scanner took only {scanned} payloads");
    assert!(
        accepted > 300,
        "only {accepted} scanned payloads were events"
    );
}

#[test]
fn non_created_events_need_no_ticket_facts() {
    let mut e = created();
    e.kind = Kind::Started;
    e.created = None;
    let got = decode(&e.subject(PREFIX), &e.to_bytes(), PREFIX, 65536).unwrap();
    assert_eq!(got.kind, Kind::Started);
    assert!(got.created.is_none());
}
