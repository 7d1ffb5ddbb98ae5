//! gRPC over TLS as a stranger's client sees it: the real server with a
//! certificate from a test CA, and Debian's Python grpcio (a gRPC stack
//! that shares nothing with ours: C core, its own TLS) calling the health
//! check and a registry read over `grpc.secure_channel` with raw bytes,
//! no generated stubs. Without the CA, and in the clear, it must fail.
//! Then a new certificate from another CA, SIGHUP, and the same again.
#[path = "support/certs.rs"]
mod certs;
mod support;

use certs::{ca, server_cert};
use std::path::Path;
use std::process::Command;
use support::*;

const ELDERS: &str = "elder_id,name,district,community\nE1,Test One,D1,C1\n";
const DEVICES: &str = "device_id,kind,elder_id,room,secret\nbtn-1,sos_button,E1,,s-btn-1\n";

/// The client: `python3 - TARGET CA_PEM TOKEN`. Prints one line per
/// check; exits non-zero on the first that does not hold.
const CLIENT: &str = r#"
import sys, grpc

target, ca_path, token = sys.argv[1:4]
ca = open(ca_path, "rb").read()
# Straight to the server, whatever proxy the environment names.
options = [("grpc.enable_http_proxy", 0)]

def call(channel, method, request, token=None):
    rpc = channel.unary_unary(method)  # bytes in, bytes out
    metadata = [("authorization", "Bearer " + token)] if token else None
    return rpc(request, timeout=10, metadata=metadata)

def code(channel, method, request, token=None):
    try:
        call(channel, method, request, token)
    except grpc.RpcError as e:
        return e.code().name
    return "OK"

# GetElderRequest { elder_id = "E1" }
get_e1 = b"\x0a\x02E1"

with grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca), options) as ch:
    # HealthCheckResponse { status = SERVING }
    health = call(ch, "/grpc.health.v1.Health/Check", b"")
    assert health == b"\x08\x01", health
    print("health SERVING")
    elder = call(ch, "/eldercare.v1.RegistryService/GetElder", get_e1, token)
    assert b"E1" in elder and b"Test One" in elder, elder
    print("GetElder E1 Test One")
    print("without token", code(ch, "/eldercare.v1.RegistryService/GetElder", get_e1))

# The system's roots do not know the test CA.
with grpc.secure_channel(target, grpc.ssl_channel_credentials(), options) as ch:
    print("without CA", code(ch, "/grpc.health.v1.Health/Check", b""))
# Nor is gRPC served in the clear beside it.
with grpc.insecure_channel(target, options) as ch:
    print("plaintext", code(ch, "/grpc.health.v1.Health/Check", b""))
"#;

/// Runs the client against `grpc` trusting the CA in `ca_file`; its
/// stdout, after checking it exited 0.
fn python_client(grpc: &str, ca_file: &Path, token: &str) -> String {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(CLIENT)
        .arg(grpc)
        .arg(ca_file)
        .arg(token)
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_python_grpc_client_calls_over_tls_with_the_ca_and_fails_without() {
    require_python_grpcio();
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let data = dir.path().to_str().unwrap();
    import_csv(dir.path(), &["--data-dir", data], ELDERS, DEVICES);

    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let (cert, key, ca_file) = (
        tls.join("server.pem"),
        tls.join("server.key"),
        tls.join("ca.pem"),
    );
    let first = ca("eldercare test CA");
    server_cert(&first, &cert, &key);
    std::fs::write(&ca_file, &first.pem).unwrap();
    // The support harness passes <data-dir>/config.toml as --config.
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "mqtts_addr = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let s = Server::spawn(dir, tokens);

    let expected = "health SERVING\n\
                    GetElder E1 Test One\n\
                    without token UNAUTHENTICATED\n\
                    without CA UNAVAILABLE\n\
                    plaintext UNAVAILABLE\n";
    assert_eq!(
        python_client(&s.grpc, &ca_file, &s.tokens["viewer"]),
        expected
    );

    // A certificate from another CA, put in force by SIGHUP: the old CA no
    // longer vouches for the server, the new one does.
    let second = ca("eldercare test CA, renewed");
    server_cert(&second, &cert, &key);
    s.reload_tls();
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(CLIENT)
        .arg(&s.grpc)
        .arg(&ca_file)
        .arg(&s.tokens["viewer"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the old CA still vouches for the server"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("StatusCode.UNAVAILABLE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&ca_file, &second.pem).unwrap();
    assert_eq!(
        python_client(&s.grpc, &ca_file, &s.tokens["viewer"]),
        expected
    );
}
