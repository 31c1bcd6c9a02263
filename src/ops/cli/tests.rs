use super::*;

#[test]
fn a_token_is_read_from_its_line_without_the_line_ending() {
    assert_eq!(
        read_token(&b"s3cr3t tok\r\nnext"[..]).unwrap(),
        "s3cr3t tok"
    );
    assert_eq!(read_token(&b"abc"[..]).unwrap(), "abc");
    assert!(read_token(&b"\n"[..]).is_err());
    assert!(read_token(&b""[..]).is_err());
}

#[test]
fn subjects_are_derived_from_lines() {
    let line =
        r#"{"type":"coc.job.script.started","id":"x","data":{"project_id":"p","order_id":1}}"#;
    let o = outgoing_from_line(line, "coc.job.script", None).unwrap();
    assert_eq!(o.subject, "coc.job.script.p.started");
    assert_eq!(o.msg_id.as_deref(), Some("x"));
    assert!(outgoing_from_line("{bad", "coc.job.script", None).is_err());
    let o = outgoing_from_line("{bad", "coc.job.script", Some("coc.job.script.p.x")).unwrap();
    assert_eq!(o.subject, "coc.job.script.p.x");
    assert_eq!(o.msg_id, None);
}

#[test]
fn times_are_ms_or_rfc3339() {
    assert_eq!(
        parse_time(Some("1690200829451")).unwrap(),
        1_690_200_829_451
    );
    assert_eq!(
        parse_time(Some("2023-07-24T12:13:49.451Z")).unwrap(),
        1_690_200_829_451
    );
    assert!(parse_time(Some("noon")).is_err());
}
