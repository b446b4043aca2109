//! examples/server pushing to a test-side device that wants 256-byte blocks:
//! it answers 4.13 Request Entity Too Large with Block1 SZX for 256 bytes, and
//! the server continues at the same byte offset with smaller blocks (RFC 7959
//! §2.9.3), and reassembles the image exactly.

mod common;

#[path = "../examples/support/coap.rs"]
mod coap;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, RequestType};
use lwm2m_fota::codec;
use lwm2m_fota::model::{Block, ContentFormat, Path, Record, Registry, ResponseCode, Value};

#[test]
fn push_renegotiates_a_smaller_block_size() {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut image = b"lwm2m-fota-image version=2.0.0\n".to_vec();
    while image.len() < 5000 {
        image.push((image.len() % 253) as u8);
    }
    let file = std::env::temp_dir().join(format!("lwm2m-fota-renegotiate-{}.bin", std::process::id()));
    std::fs::write(&file, &image).unwrap();
    let mut server = Command::new(common::example_binary("server"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--image", file.to_str().unwrap()])
        .args(["--target-version", "2.0.0", "--delivery", "push", "--timeout", "30", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let server_addr = ("127.0.0.1", port);
    let register = |socket: &UdpSocket, message_id: u16| {
        let mut packet = coap::request(MessageType::Confirmable, RequestType::Post, message_id, &[1]);
        coap::set_uri_path(&mut packet, &["rd"]);
        for q in ["ep=fake", "lt=60", "lwm2m=1.1", "b=U"] {
            coap::add_query(&mut packet, q);
        }
        coap::set_uint(&mut packet, CoapOption::ContentFormat, 40);
        packet.payload = b"</1/0>,</3/0>,</5>;ver=1.1,</5/0>".to_vec();
        socket.send_to(&coap::bytes(&packet), server_addr).unwrap();
    };
    register(&socket, 1);
    let (mut state, mut result, mut version) = (0i64, 0i64, "1.0.0".to_string());
    let mut received = Vec::new();
    let mut sizes = Vec::new();
    let mut rejected_large = 0;
    let until = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if server.try_wait().unwrap().is_some() {
            break;
        }
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        let Some(request) = coap::parse(&buf[..n]) else { continue };
        let MessageClass::Request(method) = request.header.code else { continue };
        let path = coap::lwm2m_path(&coap::uri_path(&request));
        let mut response = coap::response_to(&request, ResponseCode::CHANGED);
        match (method, path) {
            (RequestType::Get, Some(p)) if p == Path::instance(5, 0) => {
                let records = [
                    Record::new(Path::resource(5, 0, 3), Value::Integer(state)),
                    Record::new(Path::resource(5, 0, 5), Value::Integer(result)),
                    Record::new(Path::resource(5, 0, 9), Value::Integer(1)),
                ];
                let mut payload = Vec::new();
                codec::encode(ContentFormat::SenmlCbor, &p, &records, &Registry::default(), &mut payload).unwrap();
                response = coap::response_to(&request, ResponseCode::CONTENT);
                coap::set_content_format(&mut response, ContentFormat::SenmlCbor);
                response.payload = payload;
            }
            (RequestType::Get, Some(p)) if p == Path::resource(3, 0, 3) => {
                response = coap::response_to(&request, ResponseCode::CONTENT);
                coap::set_content_format(&mut response, ContentFormat::Text);
                response.payload = version.clone().into_bytes();
            }
            (RequestType::Put, Some(p)) if p == Path::resource(5, 0, 0) => {
                let block = coap::block(&request, CoapOption::Block1).unwrap();
                if block.size > 256 {
                    rejected_large += 1;
                    response = coap::response_to(&request, ResponseCode::REQUEST_ENTITY_TOO_LARGE);
                    coap::set_block(&mut response, CoapOption::Block1, Block { number: 0, more: false, size: 256 });
                } else {
                    assert_eq!(block.offset() as usize, received.len(), "blocks in order, no gap");
                    received.extend_from_slice(&request.payload);
                    sizes.push(block.size);
                    state = if block.more { 1 } else { 2 };
                    response = coap::response_to(
                        &request,
                        if block.more { ResponseCode::CONTINUE } else { ResponseCode::CHANGED },
                    );
                    coap::set_block(&mut response, CoapOption::Block1, block);
                }
            }
            (RequestType::Post, Some(p)) if p == Path::resource(5, 0, 2) => {
                socket.send_to(&coap::bytes(&response), from).unwrap();
                // "Reboot" into the new image and register again.
                state = 0;
                result = 1;
                version = "2.0.0".into();
                register(&socket, 2);
                continue;
            }
            _ => {}
        }
        socket.send_to(&coap::bytes(&response), from).unwrap();
    }
    let status = server.wait().unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(status.success(), "server reported a failure");
    assert!(rejected_large >= 1, "the first large block was refused");
    assert!(sizes.iter().all(|&s| s == 256), "{sizes:?}");
    assert_eq!(received, image, "the image arrived whole and in order");
}
