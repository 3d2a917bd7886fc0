// Push one notification with java.net.http.HttpClient (HTTP/2 over TLS, ALPN h2), with a
// client certificate from a .p12 file or with token auth.
//
//   java Push.java cert PROVIDER.p12 PASSWORD
//   java Push.java token
//
// Reads what `apns-sim test` sets: APNS_SIM_HTTP2 (host:port), APNS_SIM_TOKEN,
// APNS_SIM_CA_FILE, and for token auth APNS_SIM_AUTH_KEY_FILE, APNS_SIM_KEY_ID and
// APNS_SIM_TEAM_ID. Exits 0 on 200, 1 otherwise.

import java.io.FileInputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.Signature;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class Push {
    public static void main(String[] args) throws Exception {
        var env = System.getenv();
        String auth = args[0];

        // Trust the simulator's CA.
        var trusted = KeyStore.getInstance("PKCS12");
        trusted.load(null, null);
        try (var ca = new FileInputStream(env.get("APNS_SIM_CA_FILE"))) {
            trusted.setCertificateEntry("apns-sim", CertificateFactory.getInstance("X.509").generateCertificate(ca));
        }
        var trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trust.init(trusted);

        // Certificate auth: the provider certificate and key from the .p12.
        KeyManagerFactory keys = null;
        if (auth.equals("cert")) {
            char[] password = args[2].toCharArray();
            var p12 = KeyStore.getInstance("PKCS12");
            try (var in = new FileInputStream(args[1])) {
                p12.load(in, password);
            }
            keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            keys.init(p12, password);
        }
        var tls = SSLContext.getInstance("TLS");
        tls.init(keys == null ? null : keys.getKeyManagers(), trust.getTrustManagers(), null);

        var client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_2).sslContext(tls).build();
        var request = HttpRequest.newBuilder(
                URI.create("https://" + env.get("APNS_SIM_HTTP2") + "/3/device/" + env.get("APNS_SIM_TOKEN")))
            .header("apns-topic", "com.example.app")
            .header("apns-push-type", "alert")
            .POST(HttpRequest.BodyPublishers.ofString("{\"aps\":{\"alert\":\"Hello from apns-sim\"}}"));
        if (auth.equals("token")) {
            request.header("authorization", "bearer " + providerToken(env));
        }
        var response = client.send(request.build(), HttpResponse.BodyHandlers.ofString());
        System.out.println(auth + " " + response.version() + " " + response.statusCode() + " "
            + response.headers().firstValue("apns-id").orElse("") + " " + response.body());
        System.exit(response.statusCode() == 200 ? 0 : 1);
    }

    // An ES256 JWT signed with the .p8 key: header {alg, kid}, claims {iss, iat}, and the
    // signature as R||S (the "P1363" format JWS wants).
    static String providerToken(java.util.Map<String, String> env) throws Exception {
        String pem = Files.readString(Path.of(env.get("APNS_SIM_AUTH_KEY_FILE")));
        byte[] der = Base64.getMimeDecoder().decode(pem.replaceAll("-----[A-Z ]+-----", ""));
        var key = KeyFactory.getInstance("EC").generatePrivate(new PKCS8EncodedKeySpec(der));
        var b64 = Base64.getUrlEncoder().withoutPadding();
        String header = b64.encodeToString(
            ("{\"alg\":\"ES256\",\"kid\":\"" + env.get("APNS_SIM_KEY_ID") + "\"}").getBytes(StandardCharsets.UTF_8));
        String claims = b64.encodeToString(("{\"iss\":\"" + env.get("APNS_SIM_TEAM_ID") + "\",\"iat\":"
            + System.currentTimeMillis() / 1000 + "}").getBytes(StandardCharsets.UTF_8));
        var signer = Signature.getInstance("SHA256withECDSAinP1363Format");
        signer.initSign(key);
        signer.update((header + "." + claims).getBytes(StandardCharsets.UTF_8));
        return header + "." + claims + "." + b64.encodeToString(signer.sign());
    }
}
