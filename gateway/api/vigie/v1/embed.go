// Package vigiev1 is the generated code of Vigie's public API (package vigie.v1): protobuf
// messages, gRPC services, their REST mapping (grpc-gateway) and the OpenAPI document.
// Everything but this file is generated from the .proto files beside it by
// gateway/api/generate.sh; edit the .proto files, never the generated code.
package vigiev1

import _ "embed"

//go:generate bash ../../generate.sh

// OpenAPI is the OpenAPI (Swagger 2.0) document of the REST API, served at /openapi.json.
//
//go:embed vigie.swagger.json
var OpenAPI []byte
