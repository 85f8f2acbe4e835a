// np-cluster is the local Kubernetes control plane our tests, CI and the demo run
// against: embedded etcd + kube-apiserver + kube-controller-manager in one
// process on loopback, built from the k8s.io/kubernetes module, plus the real
// kubectl from the same modules.
//
//	np-cluster serve [--data-dir DIR] [--exit-on-stdin-eof] [--apiserver-arg=--FLAG=VALUE ...]
//	np-cluster kubectl ARGS...   (or invoke the binary through a link named kubectl)
//
// `serve` prints one JSON line on stdout once the cluster is ready:
//
//	{"kubeconfig":"/tmp/.../admin.kubeconfig","server":"https://127.0.0.1:PORT","dataDir":"...","pid":N}
//
// and keeps running until SIGTERM/SIGINT, or until its standard input closes
// when --exit-on-stdin-eof is given (how a test process that dies, even by
// SIGKILL, takes its cluster with it: the pipe's write end closes with it).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// Controllers the product depends on: namespace deletion, garbage collection,
// ServiceAccounts and their CA bundle, aggregated ClusterRoles, quotas, and the
// CronJob -> Job path the reaper is deployed through.
var controllers = []string{
	"namespace-controller",
	"garbage-collector-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"resourcequota-controller",
	"job-controller",
	"cronjob-controller",
	"ttl-after-finished-controller",
	"replicaset-controller",
	"deployment-controller",
}

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(kubectl(os.Args[1:]))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: np-cluster serve [--data-dir DIR] [--exit-on-stdin-eof] [--apiserver-arg=--FLAG=VALUE ...] | np-cluster kubectl ARGS...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "np-cluster: %v\n", err)
			os.Exit(1)
		}
	case "kubectl":
		os.Exit(kubectl(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "np-cluster: unknown command %q (want serve or kubectl)\n", os.Args[1])
		os.Exit(2)
	}
}

func kubectl(args []string) int {
	// kubectl reads os.Args itself (plugin lookup), so make it look like its own.
	os.Args = append([]string{"kubectl"}, args...)
	cmd := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(cmd); err != nil {
		kubectlutil.CheckErr(err)
		return 1
	}
	return 0
}

// repeated collects every value of a repeatable flag.
type repeated []string

func (r *repeated) String() string { return strings.Join(*r, " ") }

func (r *repeated) Set(value string) error {
	if !strings.HasPrefix(value, "--") {
		return fmt.Errorf("%q is not a kube-apiserver flag (want --FLAG=VALUE)", value)
	}
	*r = append(*r, value)
	return nil
}

type ready struct {
	Kubeconfig string `json:"kubeconfig"`
	Server     string `json:"server"`
	DataDir    string `json:"dataDir"`
	Pid        int    `json:"pid"`
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data, certificates and the admin kubeconfig (default: a new temporary directory, removed on exit)")
	stdinEOF := fs.Bool("exit-on-stdin-eof", false, "shut down when standard input reaches end of file")
	var extra repeated
	fs.Var(&extra, "apiserver-arg", "one more kube-apiserver flag, such as --authentication-token-webhook-config-file=FILE (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	removeDir := false
	if *dataDir == "" {
		d, err := os.MkdirTemp("", "np-cluster-")
		if err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		*dataDir, removeDir = d, true
	}
	if removeDir {
		defer os.RemoveAll(*dataDir)
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	pki, err := writePKI(*dataDir)
	if err != nil {
		return err
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(*dataDir, "etcd"))
	if err != nil {
		return err
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	kubeconfig := filepath.Join(*dataDir, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, pki); err != nil {
		return err
	}

	// Both components apply the same logging configuration; allow the second.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	logs.InitLogs()

	// Build the controller-manager command first: it overrides client-go
	// feature-gate defaults, which is refused once the apiserver has added
	// those gates to its flag set.
	kcm := controllermanager.NewControllerManagerCommand()
	apiDone := make(chan error, 1)
	api := apiserver.NewAPIServerCommand()
	api.SetArgs(append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(*dataDir, "certs"),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caCert,
		"--token-auth-file=" + pki.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.saPub,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		// Integration tests and benchmarks create hundreds of objects at once.
		"--max-requests-inflight=2000",
		"--max-mutating-requests-inflight=1000",
	}, extra...))
	go func() { apiDone <- api.Execute() }()

	if err := waitReady(server, pki, apiDone); err != nil {
		return err
	}

	kcm.SetArgs([]string{
		"--kubeconfig=" + kubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=" + strings.Join(controllers, ","),
		"--service-account-private-key-file=" + pki.saKey,
		"--root-ca-file=" + pki.caCert,
		"--use-service-account-credentials=false",
		"--profiling=false",
		"--concurrent-namespace-syncs=10",
		"--kube-api-qps=200",
		"--kube-api-burst=400",
	})
	kcmDone := make(chan error, 1)
	go func() { kcmDone <- kcm.Execute() }()

	if err := waitControllers(server, pki, kcmDone); err != nil {
		return err
	}

	line, _ := json.Marshal(ready{Kubeconfig: kubeconfig, Server: server, DataDir: *dataDir, Pid: os.Getpid()})
	fmt.Println(string(line))

	// Our own stop signal: the apiserver's graceful shutdown waits on long
	// requests for up to a minute, which a throwaway test cluster need not do.
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if *stdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}

	select {
	case <-stop:
		closeEtcd(etcd)
		return nil
	case err := <-apiDone:
		return fmt.Errorf("kube-apiserver stopped: %v", err)
	case err := <-kcmDone:
		return fmt.Errorf("kube-controller-manager stopped: %v", err)
	}
}

// closeEtcd closes etcd so a kept --data-dir is consistent, but does not wait
// on it for long: the apiserver still holds connections to it.
func closeEtcd(e *embed.Etcd) {
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

type pki struct {
	caCert, servingCert, servingKey, saKey, saPub, tokenFile string
	caPEM                                                    []byte
	adminToken                                               string
}

func writePKI(dir string) (*pki, error) {
	p := &pki{
		caCert:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "np-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.96.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}

	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	p.adminToken = hex.EncodeToString(tok)

	files := map[string][]byte{
		p.caCert:      p.caPEM,
		p.servingCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		p.servingKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER}),
		p.saKey:       pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		p.saPub:       pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
		p.tokenFile:   []byte(p.adminToken + ",admin,admin-uid,system:masters\n"),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return p, nil
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "np-cluster"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	// A throwaway test cluster: durability buys nothing, fsync costs every write.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, client.String(), nil
	case err := <-e.Err():
		return nil, "", fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after 60s")
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["np-cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: p.adminToken}
	cfg.Contexts["np-cluster"] = &clientcmdapi.Context{Cluster: "np-cluster", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "np-cluster"
	return clientcmd.WriteToFile(*cfg, path)
}

func adminClient(p *pki) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func get(c *http.Client, p *pki, u string) (int, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// waitReady waits for the apiserver's /readyz, failing fast if it exits.
func waitReady(server string, p *pki, done <-chan error) error {
	c := adminClient(p)
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("kube-apiserver exited before ready: %v", err)
		default:
		}
		if code, err := get(c, p, server+"/readyz"); err == nil && code == http.StatusOK {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after 120s")
}

// waitControllers waits until the serviceaccount controller has made the
// default ServiceAccount: proof the controller-manager is running controllers.
func waitControllers(server string, p *pki, done <-chan error) error {
	c := adminClient(p)
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("kube-controller-manager exited: %v", err)
		default:
		}
		code, err := get(c, p, server+"/api/v1/namespaces/default/serviceaccounts/default")
		if err == nil && code == http.StatusOK {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-controller-manager made no default ServiceAccount after 120s")
}
