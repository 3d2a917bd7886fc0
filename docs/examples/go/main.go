// Push one notification with Go's standard library (net/http speaks HTTP/2 over TLS), with
// certificate or token auth.
//
//	go run main.go cert|token
//
// Reads what `apns-sim test` sets: APNS_SIM_HTTP2 (host:port), APNS_SIM_TOKEN,
// APNS_SIM_CA_FILE, APNS_SIM_CERT_FILE + APNS_SIM_KEY_FILE, or APNS_SIM_AUTH_KEY_FILE +
// APNS_SIM_KEY_ID + APNS_SIM_TEAM_ID. Exits 0 on 200, 1 otherwise.
package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	auth := os.Args[1]
	caPEM, err := os.ReadFile(os.Getenv("APNS_SIM_CA_FILE"))
	check(err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM) // trust the simulator's CA
	config := &tls.Config{RootCAs: roots}
	if auth == "cert" {
		pair, err := tls.LoadX509KeyPair(os.Getenv("APNS_SIM_CERT_FILE"), os.Getenv("APNS_SIM_KEY_FILE"))
		check(err)
		config.Certificates = []tls.Certificate{pair}
	}
	// With a custom TLS config, net/http offers HTTP/2 (ALPN h2) only when asked to.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: config, ForceAttemptHTTP2: true}}

	url := "https://" + os.Getenv("APNS_SIM_HTTP2") + "/3/device/" + os.Getenv("APNS_SIM_TOKEN")
	body := strings.NewReader(`{"aps":{"alert":"Hello from apns-sim"}}`)
	req, err := http.NewRequest("POST", url, body)
	check(err)
	req.Header.Set("apns-topic", "com.example.app")
	req.Header.Set("apns-push-type", "alert")
	if auth == "token" {
		req.Header.Set("authorization", "bearer "+providerToken())
	}
	resp, err := client.Do(req)
	check(err)
	answer, _ := io.ReadAll(resp.Body)
	fmt.Println(auth, resp.Proto, resp.StatusCode, resp.Header.Get("apns-id"), string(answer))
	if resp.StatusCode != 200 {
		os.Exit(1)
	}
}

// providerToken signs an ES256 JWT with the .p8 key: header {alg, kid}, claims {iss, iat},
// signature R||S (32 bytes each).
func providerToken() string {
	p8, err := os.ReadFile(os.Getenv("APNS_SIM_AUTH_KEY_FILE"))
	check(err)
	block, _ := pem.Decode(p8)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	check(err)
	b64 := base64.RawURLEncoding.EncodeToString
	header := b64([]byte(fmt.Sprintf(`{"alg":"ES256","kid":"%s"}`, os.Getenv("APNS_SIM_KEY_ID"))))
	claims := b64([]byte(fmt.Sprintf(`{"iss":"%s","iat":%d}`, os.Getenv("APNS_SIM_TEAM_ID"), time.Now().Unix())))
	digest := sha256.Sum256([]byte(header + "." + claims))
	r, s, err := ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), digest[:])
	check(err)
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return header + "." + claims + "." + b64(sig)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
