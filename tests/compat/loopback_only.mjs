// Preloaded into supergateway (`node --import <this file> supergateway/dist/index.js ...`) by
// tests/compat/test_conformance.py. supergateway 4.0.0 listens on every interface and does not look at
// Host or Origin; the MCP spec requires a local Streamable HTTP server to reject requests whose Host or
// Origin is not localhost (DNS rebinding), and the conformance suite checks it (dns-rebinding-protection).
// This adds exactly that to every node:http server of the process, and binds port-only listen() calls
// to 127.0.0.1. It sees HTTP headers only: JSON-RPC passes untouched.
import http from 'node:http';

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

function loopback(url) {
    try {
        return LOOPBACK.has(new URL(url).hostname.toLowerCase());
    } catch {
        return false;
    }
}

const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, req, res) {
    if (event === 'request') {
        const origin = req.headers.origin;
        const ok = loopback(`http://${req.headers.host ?? ''}`) && (origin === undefined || loopback(origin));
        if (!ok) {
            res.writeHead(403, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify({
                jsonrpc: '2.0', id: null,
                error: { code: -32000, message: 'Forbidden: Host and Origin must be localhost' },
            }));
            return true;
        }
    }
    return emit.apply(this, arguments);
};

const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (...args) {
    if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
        args.splice(1, 0, '127.0.0.1');
    }
    return listen.apply(this, args);
};
