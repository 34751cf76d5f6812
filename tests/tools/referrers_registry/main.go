// Command referrers_registry serves go-containerregistry's registry (pkg/registry) with
// the OCI 1.1 referrers API turned on: the tests' second registry implementation, next to
// Debian's docker-registry 2.8, which has no referrers API.
//
// It keeps manifests in memory (blobs too, unless -blob-dir is given) and logs every
// request to stderr. As upstream implements it, a referrers listing reports each
// referrer's config media type as its artifactType and no OCI-Subject header is sent on
// a push with a subject: clients must cope with both, so this program does not change them.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "host:port to listen on")
	tlsCert := flag.String("tls-cert", "", "PEM certificate: serve HTTPS (needs -tls-key)")
	tlsKey := flag.String("tls-key", "", "PEM private key of -tls-cert")
	blobDir := flag.String("blob-dir", "", "keep blobs in this directory (default: in memory)")
	flag.Parse()
	if flag.NArg() != 0 {
		log.Fatalf("unexpected arguments: %q", flag.Args())
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		log.Fatal("-tls-cert and -tls-key go together")
	}

	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	options := []registry.Option{registry.Logger(logger), registry.WithReferrersSupport(true)}
	if *blobDir != "" {
		if err := os.MkdirAll(*blobDir, 0o755); err != nil {
			logger.Fatal(err)
		}
		options = append(options, registry.WithBlobHandler(registry.NewDiskBlobHandler(*blobDir)))
	}

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Fatal(err)
	}
	server := &http.Server{Handler: registry.New(options...), ReadHeaderTimeout: 30 * time.Second}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-stop
		logger.Printf("%s: shutting down", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
	}()

	scheme := "http"
	if *tlsCert != "" {
		scheme = "https"
	}
	logger.Printf("serving the registry (referrers API on) at %s://%s/v2/", scheme, listener.Addr())
	if *tlsCert != "" {
		err = server.ServeTLS(listener, *tlsCert, *tlsKey)
	} else {
		err = server.Serve(listener)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Fatal(err)
	}
}
