//! Fuzzes the binary API's error-response decoder (command 8,
//! `apns_sim::protocol::error_response`), which a provider client runs on what the gateway
//! sends.
//!
//! Properties: a decoded packet consumed exactly [`ErrorResponse::LEN`] bytes of what it was
//! given and re-encodes to those very bytes (the format has one encoding); `Ok(None)` only
//! when the input is shorter than a packet and starts like one; an error names the byte that
//! is wrong; every shorter prefix of a packet is `Ok(None)`.
#![no_main]

use apns_sim::protocol::error_response::{ErrorResponse, ErrorResponseError, Status};
use apns_sim_fuzz::assert_prefixes_incomplete;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match ErrorResponse::decode(data) {
        Ok(Some((response, used))) => {
            assert_eq!(used, ErrorResponse::LEN);
            assert!(used <= data.len(), "claims {used} bytes of {}", data.len());
            assert_eq!(
                response.encode(),
                data[..used],
                "re-encoding changed the bytes"
            );
            assert_eq!(
                Status::from_code(response.status.code()),
                Some(response.status)
            );
            assert_prefixes_incomplete(&data[..used], ErrorResponse::decode);
        }
        Ok(None) => {
            assert!(data.len() < ErrorResponse::LEN);
            assert!(data.first().map_or(true, |&b| b == ErrorResponse::COMMAND));
        }
        Err(ErrorResponseError::UnknownCommand(byte)) => {
            assert_eq!(data.first(), Some(&byte));
            assert_ne!(byte, ErrorResponse::COMMAND);
        }
        Err(ErrorResponseError::UnknownStatus(code)) => {
            assert_eq!(data.get(1), Some(&code));
            assert_eq!(Status::from_code(code), None);
        }
    }
});
