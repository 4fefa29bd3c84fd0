//! `docs/error-codes.md` holds the tables of the code catalogue
//! (`chorus_schema::codes`) as they are now, and the flatbuffers enums carry
//! the catalogue's values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use chorus_schema::api::{ErrorCode, Response};
use chorus_schema::codes::{render_doc, Surface};
use chorus_schema::{EdgeErrorCode, RejectCode};

fn doc_path() -> std::path::PathBuf {
    // At run time: a shared target dir may hold a binary built in another checkout.
    let dir: std::path::PathBuf =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into);
    dir.join("../docs/error-codes.md")
}

#[test]
fn the_docs_tables_are_generated_from_the_catalogue() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).unwrap();
    let fresh = render_doc(&doc).unwrap();
    if std::env::var_os("CHORUS_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    for surface in Surface::ALL {
        assert!(fresh.contains(&chorus_schema::codes::markdown_table(surface)));
    }
    assert!(
        doc == fresh,
        "{} is stale: run `CHORUS_BLESS=1 cargo test -p chorus-schema --test error_codes`",
        path.display()
    );
}

#[test]
fn every_log_code_survives_the_wire() {
    for code in ErrorCode::ALL {
        let response = Response::Error { code: *code, message: "m".into(), leader: None };
        assert_eq!(Response::decode(&response.encode()).unwrap(), response);
    }
}

#[test]
fn every_rejection_survives_the_wire() {
    for code in RejectCode::ALL {
        let result: chorus_schema::CommandResult = Err(chorus_schema::Rejection::new(*code, "m"));
        assert_eq!(chorus_schema::decode_result(&chorus_schema::encode_result(&result)).unwrap(), result);
    }
}

#[test]
fn every_edge_code_survives_the_wire() {
    for code in EdgeErrorCode::ALL {
        let frame = chorus_schema::ServerFrame::Error {
            code: *code,
            message: "m".into(),
            client_msg_id: None,
            retry_after_ms: None,
        };
        assert_eq!(chorus_schema::ServerFrame::decode(&frame.encode()).unwrap(), frame);
    }
}
