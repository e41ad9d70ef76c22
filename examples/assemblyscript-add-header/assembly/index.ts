// A proxy-wasm filter written in AssemblyScript with @solo-io/proxy-runtime: proof that
// wasmesh runs filters from any proxy-wasm SDK, not only Rust.
//
// Build: `cargo xtask filters` (runs `npm ci && npm run build` here), giving
// target/filters/assemblyscript/add_header.wasm. Config (root_id must be "add_header"):
//
//   filters:
//     - name: as-add-header
//       module: target/filters/assemblyscript/add_header.wasm
//       root_id: add_header
//       config: "from-assemblyscript"
//
// Every response gets `x-as-filter: <configuration>` (or "hello" when empty), and a
// request carrying `x-as-deny: 1` is answered 403 by the filter itself.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext,
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  stream_context,
  send_local_response,
  GrpcStatusValues,
} from "@solo-io/proxy-runtime";

// The configuration, copied out of the root context once. (With proxy-runtime 0.1.8 and
// AssemblyScript 0.14, reading `this.root_context` from an HTTP context after an earlier
// HTTP context was deleted trips the runtime's reference counting — a guest-side bug —
// so the filter keeps what it needs in a global.)
let CONFIG: string = "";

class AddHeaderRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    super.onConfigure(configuration_size);
    CONFIG = this.getConfiguration();
    return true;
  }

  createContext(context_id: u32): Context {
    return new AddHeader(context_id, this);
  }
}

class AddHeader extends Context {
  constructor(context_id: u32, root_context: AddHeaderRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (stream_context.headers.request.get("x-as-deny") == "1") {
      send_local_response(403, "denied by assemblyscript", String.UTF8.encode("denied\n"), [], GrpcStatusValues.PermissionDenied);
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-as-filter", CONFIG == "" ? "hello" : CONFIG);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new AddHeaderRoot(context_id);
}, "add_header");
