// Package export_wasi_http_incoming_handler is the demo app, in Go: the same
// five routes as every guest-examples/*-demo.
//
// `GET /` greets, `GET /hello/NAME` answers {"hello": NAME}, `POST /echo`
// streams the request body back with its content type, `GET /env/NAME`
// shows an environment variable the app was granted, anything else is 404.
// The bindings (wasi_http_types, wasi_io_streams) are written by
// `wit-bindgen go` at build time; os.Getenv is Go's wasip1 port, which the
// preview1 adapter turns into wasi:cli/environment.
package export_wasi_http_incoming_handler

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"

	"wit_component/wasi_http_types"
	"wit_component/wasi_io_streams"

	witRuntime "go.bytecodealliance.org/pkg/wit/runtime"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

const text = "text/plain; charset=utf-8"

// Handle is wasi:http/incoming-handler#handle.
func Handle(request *wasi_http_types.IncomingRequest, out *wasi_http_types.ResponseOutparam) {
	defer witRuntime.Release()
	path, _, _ := strings.Cut(request.PathWithQuery().SomeOr("/"), "?")
	method := request.Method().Tag()
	get := method == wasi_http_types.Method_Get
	switch {
	case path == "/echo" && method == wasi_http_types.Method_Post:
		echo(request, out)
		return
	case path == "/echo":
		reply(out, 405, text, []byte("use POST\n"))
	case get && path == "/":
		reply(out, 200, text, []byte("Hello from Go!\n"))
	case get && strings.HasPrefix(path, "/hello/"):
		name := decode(strings.TrimPrefix(path, "/hello/"))
		body, _ := json.Marshal(map[string]string{"hello": name})
		reply(out, 200, "application/json", append(body, '\n'))
	case get && strings.HasPrefix(path, "/env/"):
		if value, ok := os.LookupEnv(decode(strings.TrimPrefix(path, "/env/"))); ok {
			reply(out, 200, text, []byte(value+"\n"))
		} else {
			reply(out, 404, text, []byte("no such variable granted\n"))
		}
	default:
		reply(out, 404, text, []byte("not found\n"))
	}
	request.Drop()
}

func decode(segment string) string {
	if decoded, err := url.PathUnescape(segment); err == nil {
		return decoded
	}
	return segment
}

// start sends the head and hands back the body to write.
func start(out *wasi_http_types.ResponseOutparam, status uint16, contentType []byte) *wasi_http_types.OutgoingBody {
	headers := wasi_http_types.FieldsFromList([]witTypes.Tuple2[string, []uint8]{
		{F0: "content-type", F1: contentType},
	}).Ok()
	response := wasi_http_types.MakeOutgoingResponse(headers)
	response.SetStatusCode(status)
	body := response.Body().Ok()
	wasi_http_types.ResponseOutparamSet(out, witTypes.Ok[*wasi_http_types.OutgoingResponse, wasi_http_types.ErrorCode](response))
	return body
}

func reply(out *wasi_http_types.ResponseOutparam, status uint16, contentType string, data []byte) {
	body := start(out, status, []byte(contentType))
	stream := body.Write().Ok()
	// A client that went away is not this app's error: the host logs it.
	stream.BlockingWriteAndFlush(data)
	stream.Drop()
	wasi_http_types.OutgoingBodyFinish(body, witTypes.None[*wasi_http_types.Fields]())
}

// echo copies the request body to the response as it arrives, never whole.
func echo(request *wasi_http_types.IncomingRequest, out *wasi_http_types.ResponseOutparam) {
	headers := request.Headers()
	contentType := []byte("application/octet-stream")
	if types := headers.Get("content-type"); len(types) > 0 {
		contentType = types[0]
	}
	headers.Drop()
	incoming := request.Consume().Ok()
	input := incoming.Stream().Ok()
	body := start(out, 200, contentType)
	output := body.Write().Ok()
	complete := false
	for {
		copied := output.BlockingSplice(input, 64*1024)
		if copied.IsErr() {
			complete = copied.Err().Tag() == wasi_io_streams.StreamError_Closed
			break
		}
	}
	output.BlockingFlush()
	// Children before parents: the streams, then the bodies, then the request.
	input.Drop()
	wasi_http_types.IncomingBodyFinish(incoming).Drop()
	output.Drop()
	if complete {
		wasi_http_types.OutgoingBodyFinish(body, witTypes.None[*wasi_http_types.Fields]())
	} else {
		// An unfinished body tells the client the echo was cut short.
		body.Drop()
	}
	request.Drop()
}
