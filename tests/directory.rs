//! Recipients' certificates from a real OpenLDAP directory (`[directory]`): persons,
//! contacts, aliases, nested lists, revocation, and every kind of directory failure, with
//! OpenSSL decrypting as each recipient.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::slapd::{ADMIN_DN, ADMIN_PASSWORD, Slapd, ldif_binary};
use common::*;
use smime_agent_proto::client::ClientError;
use smime_agent_proto::{
    ComposeParams, EncryptParams, EncryptResult, ErrorCode, Purpose, WhichParams,
};

const MSG: &str = "Content-Type: text/plain; charset=utf-8\r\n\r\nFrom the directory.\r\n";

/// The PKI's certificates used: Bob (a person, alias robert@), Carol (a contact, her
/// certificate in a userSMIMECertificate SignedData), Alice (revoked).
const NAMES: &[&str] = &[
    "bob-dual-rsa",
    "carol-san-rsa",
    "alice-enc-rsa",
    "alice-enc-ec",
];

/// A PKI of the test's own whose CRLs a loopback server publishes (alice-enc-rsa
/// revoked; alice-enc-ec is the sender's own key, on a token, for `compose`), and a slapd loaded with the people, contacts and lists below.
struct Setup {
    dir: tempfile::TempDir,
    pki: PathBuf,
    _crls: CrlServer,
    slapd: Slapd,
}

fn people(pki: &Path) -> String {
    let der = |n: &str| std::fs::read(pki.join(format!("{n}.der"))).unwrap();
    // Carol's certificate as a certs-only SignedData, as Outlook publishes it.
    let carol_p7 = {
        let out = Command::new("openssl")
            .args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-certfile"])
            .arg(pki.join("carol-san-rsa.pem"))
            .output()
            .unwrap();
        ok("openssl crl2pkcs7", &out);
        out.stdout
    };
    let mut l = String::new();
    for ou in ["people", "contacts", "lists"] {
        l += &format!(
            "dn: ou={ou},dc=example,dc=org\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        );
    }
    let person = |uid: &str, mail: &str, extra: &str| {
        format!(
            "dn: uid={uid},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n\
             objectClass: inetLocalMailRecipient\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
             mail: {mail}\n{extra}\n"
        )
    };
    l += &person(
        "bob",
        "bob@example.org",
        &format!(
            "mailLocalAddress: robert@example.org\nmailLocalAddress: shared@example.org\n{}",
            ldif_binary("userCertificate;binary", &der("bob-dual-rsa"))
        ),
    );
    l += &person(
        "alice",
        "alice@example.org",
        &format!(
            "mailLocalAddress: shared@example.org\n{}",
            ldif_binary("userCertificate;binary", &der("alice-enc-rsa"))
        ),
    );
    l += &person("nocert", "nocert@example.org", "");
    l += &person(
        "garbage",
        "garbage@example.org",
        &ldif_binary("userSMIMECertificate", b"this is not a PKCS#7 SignedData"),
    );
    // Past the 1 MiB the agent reads of one answer, and past the 2 MiB it lets a server
    // send on the connection of one lookup.
    l += &person(
        "huge",
        "huge@example.org",
        &ldif_binary("userSMIMECertificate", &vec![0x30; 3 << 19]),
    );
    l += &person(
        "endless",
        "endless@example.org",
        &ldif_binary("userSMIMECertificate", &vec![0x30; 3 << 20]),
    );
    l += &format!(
        "dn: cn=Carol Example,ou=contacts,dc=example,dc=org\nobjectClass: person\n\
         objectClass: extensibleObject\ncn: Carol Example\nsn: Example\n\
         mail: carol@example.org\n{}\n",
        ldif_binary("userSMIMECertificate", &carol_p7)
    );
    // team -> bob, subteam; subteam -> carol, team (a cycle).
    l += "dn: cn=team,ou=lists,dc=example,dc=org\nobjectClass: groupOfNames\n\
          objectClass: extensibleObject\ncn: team\nmail: team@example.org\n\
          member: uid=bob,ou=people,dc=example,dc=org\n\
          member: cn=subteam,ou=lists,dc=example,dc=org\n\n";
    l += "dn: cn=subteam,ou=lists,dc=example,dc=org\nobjectClass: groupOfUniqueNames\n\
          objectClass: extensibleObject\ncn: subteam\nmail: subteam@example.org\n\
          uniqueMember: cn=Carol Example,ou=contacts,dc=example,dc=org\n\
          uniqueMember: cn=team,ou=lists,dc=example,dc=org\n\n";
    l += "dn: cn=all,ou=lists,dc=example,dc=org\nobjectClass: groupOfNames\n\
          objectClass: extensibleObject\ncn: all\nmail: all@example.org\n\
          member: cn=team,ou=lists,dc=example,dc=org\n\
          member: uid=nocert,ou=people,dc=example,dc=org\n\
          rfc822MailMember: robert@example.org\nrfc822MailMember: not-an-address\n\n";
    // A list of 400 members (entries that do not exist): reading them takes longer than
    // the millisecond the expansion is given below.
    l += "dn: cn=big,ou=lists,dc=example,dc=org\nobjectClass: groupOfNames\n\
          objectClass: extensibleObject\ncn: big\nmail: big@example.org\n";
    for i in 0..400 {
        l += &format!("member: uid=ghost{i},ou=people,dc=example,dc=org\n");
    }
    l += "\n";
    l
}

/// A TLS server certificate for 127.0.0.1 from the PKI's issuing CA.
fn server_certificate(pki: &Path) -> (PathBuf, PathBuf) {
    let key = pki.join("ldap-server.key.pem");
    let csr = pki.join("ldap-server.csr");
    let cert = pki.join("ldap-server.pem");
    let ext = write_file(
        pki,
        "ldap-server.ext",
        b"basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
          extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
    );
    let p = path_str;
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p(&key),
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            p(&key),
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            p(&csr),
        ],
    );
    let (ca, ca_key) = (pki.join("ca.pem"), pki.join("ca.key.pem"));
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&ca),
            "-CAkey",
            p(&ca_key),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            p(&ext),
            "-out",
            p(&cert),
        ],
    );
    (cert, key)
}

async fn setup() -> Setup {
    let crls = CrlServer::start().await;
    let dir = tempdir();
    let pki = pki_in(&dir.path().join("pki"), &crls.base_url(), NAMES);
    crls.publish("/ca.crl", make_crl(&pki, "ca", &["alice-enc-rsa"], 86400));
    crls.publish("/root-ca.crl", make_crl(&pki, "root", &[], 86400));
    let (cert, key) = server_certificate(&pki);
    let slapd = Slapd::start_with(
        &dir.path().join("slapd"),
        &people(&pki),
        Some((&cert, &key)),
    );
    Setup {
        dir,
        pki,
        _crls: crls,
        slapd,
    }
}

impl Setup {
    /// An agent whose only source of recipients is `servers` (`[[directory.server]]`
    /// tables), with `extra` configuration.
    fn agent(&self, name: &str, extra: &str, servers: &str) -> Agent {
        Agent::start(
            &self.dir.path().join(name),
            AgentSpec {
                trust: Some(trust_for(&self.pki)),
                extra_config: format!(
                    "[directory]\nconnect_timeout_ms = 2000\nsearch_timeout_ms = 2000\n\
                     {extra}\n\n{servers}"
                ),
                ..Default::default()
            },
        )
    }

    /// The test slapd, bound as its administrator with `password`.
    fn server(&self, password: &str) -> String {
        let pw = write_file(
            self.dir.path(),
            &format!("password-{}", rand_suffix()),
            format!("{password}\n").as_bytes(),
        );
        format!(
            "[[directory.server]]\nurl = \"{}\"\nbase_dn = \"dc=example,dc=org\"\n\
             bind = \"simple\"\nbind_dn = \"{ADMIN_DN}\"\npassword_file = \"{}\"\n\
             allow_plaintext_bind = true\n",
            self.slapd.url(),
            pw.display()
        )
    }

    /// OpenSSL decrypting as the PKI's `name`.
    fn decrypt_as(&self, mime: &[u8], name: &str) -> Vec<u8> {
        let cert = self.pki.join(format!("{name}.pem"));
        let key = self.pki.join(format!("{name}.key.pem"));
        let args = [
            "cms",
            "-decrypt",
            "-recip",
            path_str(&cert),
            "-inkey",
            path_str(&key),
        ];
        openssl(self.dir.path(), &args, mime).unwrap_or_else(|e| panic!("OpenSSL as {name}: {e}"))
    }
}

async fn encrypt_to(agent: &Agent, to: &[&str]) -> Result<EncryptResult, ClientError> {
    agent
        .client()
        .await
        .encrypt(EncryptParams {
            recipients: to.iter().map(|s| s.to_string()).collect(),
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
}

/// The error of a refused encryption: recipient_without_certificate, with its message.
fn refused(r: Result<EncryptResult, ClientError>) -> (Vec<String>, String) {
    let err = r.expect_err("encryption refused");
    let ClientError::Agent(body) = err else {
        panic!("{err}")
    };
    assert_eq!(body.code, ErrorCode::RecipientWithoutCertificate, "{body}");
    (body.recipients.unwrap_or_default(), body.message)
}

fn sources(r: &EncryptResult) -> Vec<(String, String, Option<String>)> {
    r.recipients
        .iter()
        .map(|x| (x.address.clone(), x.source.clone(), x.list.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_and_a_contact_found_only_in_the_directory_read_what_the_agent_encrypts() {
    let s = setup().await;
    let agent = s.agent("agent", "", &s.server(ADMIN_PASSWORD));
    let r = encrypt_to(&agent, &["Bob@example.org", "carol@example.org"])
        .await
        .expect("encrypt");
    assert_eq!(
        sources(&r),
        [
            ("Bob@example.org".into(), "directory".into(), None),
            ("carol@example.org".into(), "directory".into(), None)
        ]
    );
    assert_eq!(s.decrypt_as(&r.mime.0, "bob-dual-rsa"), MSG.as_bytes());
    assert_eq!(s.decrypt_as(&r.mime.0, "carol-san-rsa"), MSG.as_bytes());

    // Alice's certificate in the directory is revoked: refused like any other.
    let (who, why) = refused(encrypt_to(&agent, &["alice@example.org"]).await);
    assert_eq!(who, ["alice@example.org"]);
    assert!(why.contains("revoked"), "{why}");
    // The same over the Unix socket, bound by SASL EXTERNAL.
    let external = s.agent(
        "external",
        "",
        &format!(
            "[[directory.server]]\nurl = \"{}\"\nbase_dn = \"dc=example,dc=org\"\n\
             bind = \"sasl_external\"\n",
            s.slapd.ldapi_url()
        ),
    );
    let r = encrypt_to(&external, &["bob@example.org"])
        .await
        .expect("encrypt over ldapi");
    assert_eq!(r.recipients[0].source, "directory");
    assert_eq!(s.decrypt_as(&r.mime.0, "bob-dual-rsa"), MSG.as_bytes());

    // An address the directory does not know says so.
    let (_, why) = refused(encrypt_to(&agent, &["nobody@example.org"]).await);
    assert!(why.contains("not in the directory"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_finds_the_primary_certificate_only_with_use_secondary_proxies() {
    let s = setup().await;
    let on = s.agent(
        "on",
        "[policy]\nuse_secondary_proxies = true\n",
        &s.server(ADMIN_PASSWORD),
    );
    let r = encrypt_to(&on, &["robert@example.org"])
        .await
        .expect("encrypt");
    assert_eq!(
        sources(&r),
        [("robert@example.org".into(), "directory".into(), None)]
    );
    assert!(
        r.recipients[0].subject.contains("Bob Example"),
        "{:?}",
        r.recipients
    );
    assert_eq!(s.decrypt_as(&r.mime.0, "bob-dual-rsa"), MSG.as_bytes());
    // An alias that two people claim names neither: refused, both named.
    let (who, why) = refused(encrypt_to(&on, &["shared@example.org"]).await);
    assert_eq!(who, ["shared@example.org"]);
    assert!(
        why.contains("several entries") && why.contains("uid=alice") && why.contains("uid=bob"),
        "{why}"
    );

    let off = s.agent(
        "off",
        "[policy]\nuse_secondary_proxies = false\n",
        &s.server(ADMIN_PASSWORD),
    );
    let (who, why) = refused(encrypt_to(&off, &["robert@example.org"]).await);
    assert_eq!(who, ["robert@example.org"]);
    assert!(why.contains("use_secondary_proxies"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_list_expands_to_its_members_and_lists_are_bounded() {
    let s = setup().await;
    let agent = s.agent("agent", "", &s.server(ADMIN_PASSWORD));
    let r = encrypt_to(&agent, &["team@example.org"])
        .await
        .expect("encrypt");
    let list = Some("team@example.org".to_string());
    assert_eq!(
        sources(&r),
        [
            ("bob@example.org".into(), "directory".into(), list.clone()),
            ("carol@example.org".into(), "directory".into(), list)
        ]
    );
    assert_eq!(s.decrypt_as(&r.mime.0, "bob-dual-rsa"), MSG.as_bytes());
    assert_eq!(s.decrypt_as(&r.mime.0, "carol-san-rsa"), MSG.as_bytes());

    // A member without a certificate is listed like any recipient without one.
    // A member named by an address the agent does not accept is one too; one named by a
    // good address (Bob's alias) is found.
    let (who, why) = refused(encrypt_to(&agent, &["all@example.org"]).await);
    assert_eq!(who, ["not-an-address", "nocert@example.org"]);
    assert!(
        why.contains("member of the distribution list all@example.org"),
        "{why}"
    );
    assert!(
        why.contains("an address the agent does not accept"),
        "{why}"
    );

    // dl_expansion_timeout_ms = 0: no encrypting to lists.
    let none = s.agent(
        "none",
        "dl_expansion_timeout_ms = 0",
        &s.server(ADMIN_PASSWORD),
    );
    let (who, why) = refused(encrypt_to(&none, &["team@example.org"]).await);
    assert_eq!(who, ["team@example.org"]);
    assert!(why.contains("dl_expansion_timeout_ms = 0"), "{why}");

    // An expansion that outlasts its time says what it could not expand.
    let slow = s.agent(
        "slow",
        "dl_expansion_timeout_ms = 1",
        &s.server(ADMIN_PASSWORD),
    );
    let (who, why) = refused(encrypt_to(&slow, &["big@example.org"]).await);
    assert_eq!(who, ["big@example.org"]);
    assert!(
        why.contains("not expanded within dl_expansion_timeout_ms"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_failures_name_their_cause_and_the_agent_keeps_serving() {
    let s = setup().await;
    let check = |agent: &Agent, to: &'static str, says: &'static [&'static str]| {
        let socket = agent.socket.clone();
        async move {
            let client = smime_agent_proto::client::Client::connect(&socket, hello(true))
                .await
                .unwrap();
            let r = client
                .encrypt(EncryptParams {
                    recipients: vec![to.into()],
                    content: MSG.as_bytes().to_vec().into(),
                    ..Default::default()
                })
                .await;
            let (who, why) = refused(r);
            assert_eq!(who, [to]);
            for s in says {
                assert!(why.contains(s), "{to}: {why}");
            }
            // The agent goes on serving.
            client
                .status()
                .await
                .expect("status after a directory failure");
        }
    };

    // Hostile answers: a garbage PKCS#7, attributes larger than the agent reads.
    let agent = s.agent("agent", "", &s.server(ADMIN_PASSWORD));
    check(&agent, "garbage@example.org", &["not a PKCS#7 SignedData"]).await;
    check(
        &agent,
        "huge@example.org",
        &["refused answer", "larger than"],
    )
    .await;
    check(
        &agent,
        "endless@example.org",
        &["refused answer", "sent more than 2097152 bytes"],
    )
    .await;

    // A wrong bind password.
    let wrong = s.agent("wrong", "", &s.server("not-the-password"));
    check(
        &wrong,
        "bob@example.org",
        &["cannot bind", "invalid credentials"],
    )
    .await;

    // An empty password file would make the bind an unauthenticated one: refused.
    let empty = s.agent("empty", "", &s.server(""));
    check(&empty, "bob@example.org", &["password file", "is empty"]).await;

    // Nothing listens.
    let port = dead_port();
    let unreachable = s.agent(
        "unreachable",
        "",
        &format!(
            "[[directory.server]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"dc=example,dc=org\"\n"
        ),
    );
    check(&unreachable, "bob@example.org", &["cannot connect"]).await;

    // A server that accepts and never answers: the search timeout ends the wait.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in listener.incoming().take(8) {
            held.push(c);
        }
        std::thread::sleep(std::time::Duration::from_secs(120));
    });
    let stalled = s.agent(
        "stalled",
        "",
        &format!(
            "[[directory.server]]\nurl = \"ldap://127.0.0.1:{stalled_port}\"\nbase_dn = \"dc=example,dc=org\"\n"
        ),
    );
    let started = std::time::Instant::now();
    check(
        &stalled,
        "bob@example.org",
        &["no answer searching within 2000 ms"],
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A server whose bind answer makes the LDAP client itself fail (a result that is not
    // a sequence, on which ldap3 panics): an unreadable answer, and the agent goes on.
    let hostile = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hostile_port = hostile.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for c in hostile.incoming().take(8) {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 512];
            let Ok(n) = c.read(&mut buf) else { continue };
            // LDAPMessage ::= SEQUENCE { messageID INTEGER, ... }: answer with its id.
            let header = if buf[1] < 0x80 {
                2
            } else {
                2 + (buf[1] & 0x7f) as usize
            };
            if n < header + 2 || buf[header] != 0x02 {
                continue;
            }
            let id = &buf[header + 2..header + 2 + buf[header + 1] as usize];
            let mut answer = vec![0x30, (2 + id.len() + 3) as u8, 0x02, id.len() as u8];
            answer.extend_from_slice(id);
            answer.extend_from_slice(&[0x45, 0x01, 0x00]); // [APPLICATION 5], primitive
            let _ = c.write_all(&answer);
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
    });
    let malformed = s.agent(
        "malformed",
        "",
        &format!(
            "[[directory.server]]\nurl = \"ldap://127.0.0.1:{hostile_port}\"\nbase_dn = \"dc=example,dc=org\"\n\
             bind = \"simple\"\nbind_dn = \"{ADMIN_DN}\"\npassword_file = \"{}\"\n\
             allow_plaintext_bind = true\n",
            write_file(s.dir.path(), "hostile-password", b"x\n").display()
        ),
    );
    check(
        &malformed,
        "bob@example.org",
        &["unreadable answer", "malformed answer"],
    )
    .await;

    // A failing first server does not hide a good second one.
    let both = s.agent(
        "both",
        "",
        &format!(
            "[[directory.server]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase_dn = \"dc=example,dc=org\"\n\n{}",
            s.server(ADMIN_PASSWORD)
        ),
    );
    let r = encrypt_to(&both, &["bob@example.org"])
        .await
        .expect("encrypt");
    assert_eq!(r.recipients[0].source, "directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn which_for_encrypt_names_the_directory_and_compose_sends_a_list_one_envelope() {
    let s = setup().await;
    let hsm = SoftHsm::new(&s.dir.path().join("softhsm"));
    hsm.add_token_from(&s.pki, "alice", PIN, &["alice-enc-ec"]);
    let agent = Agent::start(
        &s.dir.path().join("agent"),
        AgentSpec {
            softhsm: Some(&hsm),
            trust: Some(trust_for(&s.pki)),
            extra_config: format!("[directory]\n\n{}", s.server(ADMIN_PASSWORD)),
            ..Default::default()
        },
    );
    let client = agent.client().await;

    // which --for encrypt: the address as a recipient, with its source.
    let w = client
        .which(WhichParams {
            address: "bob@example.org".into(),
            purpose: Purpose::Encrypt,
        })
        .await
        .expect("which");
    let rc = w
        .recipient
        .expect("which for encrypt explains the recipient");
    assert_eq!(rc.found.len(), 1, "{rc:?}");
    assert_eq!(rc.found[0].source, "directory");
    assert!(rc.without_certificate.is_empty(), "{rc:?}");
    let out = agent
        .cli()
        .args(["which", "--address", "team@example.org", "--for", "encrypt"])
        .output()
        .unwrap();
    let text = ok("smime-agent which", &out);
    assert!(
        text.contains("bob@example.org: ")
            && text.contains("source directory | member of team@example.org"),
        "{text}"
    );

    // compose To: a list: one envelope for the list's members and the sender.
    let message =
        "From: alice@example.org\r\nTo: team@example.org\r\nSubject: hi\r\n\r\nTo the team.\r\n";
    let r = client
        .compose(ComposeParams {
            content: message.as_bytes().to_vec().into(),
            sign: false,
            encrypt: true,
            allow_unencrypted: false,
            certificates: vec![],
        })
        .await
        .expect("compose");
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].recipients, ["team@example.org"]);
    let mut to: Vec<(String, String)> = r
        .encrypted_to
        .iter()
        .map(|e| (e.address.clone(), e.source.clone()))
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            ("alice@example.org".into(), "own".into()),
            ("bob@example.org".into(), "directory".into()),
            ("carol@example.org".into(), "directory".into()),
        ]
    );
    let sent = &r.messages[0].mime.0;
    for name in ["bob-dual-rsa", "carol-san-rsa"] {
        let inner = s.decrypt_as(sent, name);
        assert!(
            String::from_utf8_lossy(&inner).contains("To the team."),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_a_server_takes_effect_at_once() {
    let s = setup().await;
    let agent = s.agent("agent", "", "");
    let (_, why) = refused(encrypt_to(&agent, &["bob@example.org"]).await);
    assert!(why.contains("no certificate known"), "{why}");
    let mut cfg = std::fs::read_to_string(&agent.config).unwrap();
    cfg.push_str(&format!("\n{}", s.server(ADMIN_PASSWORD)));
    std::fs::write(&agent.config, cfg).unwrap();
    let out = agent.cli().arg("reload").output().unwrap();
    ok("smime-agent reload", &out);
    let r = encrypt_to(&agent, &["bob@example.org"])
        .await
        .expect("encrypt after reload");
    assert_eq!(r.recipients[0].source, "directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_check_the_server_against_ca_file() {
    let s = setup().await;
    let chain = s.pki.join("chain.pem");
    let servers = [
        format!("url = \"{}\"\n", s.slapd.ldaps_url()),
        format!("url = \"{}\"\nstarttls = true\n", s.slapd.url()),
    ];
    for (i, url) in servers.iter().enumerate() {
        let agent = s.agent(
            &format!("tls{i}"),
            "",
            &format!(
                "[[directory.server]]\n{url}base_dn = \"dc=example,dc=org\"\nca_file = \"{}\"\n",
                chain.display()
            ),
        );
        let r = encrypt_to(&agent, &["bob@example.org"]).await.expect(url);
        assert_eq!(r.recipients[0].source, "directory", "{url}");
    }
    // A CA file that does not vouch for the server: no connection.
    let other = workspace_root().join("tests/data/signing/p256.pem");
    let agent = s.agent(
        "wrong-ca",
        "",
        &format!(
            "[[directory.server]]\nurl = \"{}\"\nbase_dn = \"dc=example,dc=org\"\nca_file = \"{}\"\n",
            s.slapd.ldaps_url(),
            other.display()
        ),
    );
    let (_, why) = refused(encrypt_to(&agent, &["bob@example.org"]).await);
    assert!(
        why.contains("cannot connect") && why.contains("certificate"),
        "{why}"
    );
}
