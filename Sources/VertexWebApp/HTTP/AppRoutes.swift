import Foundation
import Hummingbird
import Logging

/// The app's HTTP interface: the page and its assets, the state (whole, and as a
/// stream of server-sent events), and one route per action.
enum AppRoutes {
    static func add(to router: Router<BasicRequestContext>, app: VertexApp) {
        router.get("/") { _, _ in asset(PageAssets.html, type: "text/html; charset=utf-8") }
        router.get("/app.js") { _, _ in asset(PageAssets.script, type: "text/javascript; charset=utf-8") }
        router.get("/app.css") { _, _ in asset(PageAssets.style, type: "text/css; charset=utf-8") }

        router.get("/api/state") { _, _ in try await answer { try await app.snapshot() } }
        router.get("/api/events") { _, _ in events(app) }

        router.post("/api/identities") { request, context in
            try await answer {
                let form = try await request.decode(as: SignInForm.self, context: context)
                return ["address": try await app.signIn(address: form.address, password: form.password, server: form.server,
                                                        createAccount: form.createAccount ?? false)]
            }
        }
        router.post("/api/contacts") { request, context in
            try await answer {
                let form = try await request.decode(as: ContactForm.self, context: context)
                try await app.saveContact(address: form.address, name: form.name, server: form.server)
                return ["address": form.address]
            }
        }
        router.delete("/api/contacts/:address") { _, context in
            try await answer {
                let address = try context.parameters.require("address")
                try await app.removeContact(address: address)
                return ["address": address]
            }
        }
        router.post("/api/prompts/:id") { request, context in
            try await answer {
                let id = try context.parameters.require("id")
                let form = try await request.decode(as: PromptForm.self, context: context)
                guard form.answer != .timedOut else { throw VertexAppError(.badRequest, "answer once, always or refuse") }
                guard app.resolve(prompt: id, with: form.answer) else {
                    throw VertexAppError(.notFound, "that request is gone (answered, or it timed out)")
                }
                return ["answer": form.answer.rawValue]
            }
        }
        router.post("/api/uploads") { request, _ in
            try await answer {
                guard let name = request.uri.queryParameters["name"].map(String.init) else {
                    throw VertexAppError(.badRequest, "name the file: /api/uploads?name=NAME")
                }
                return try await app.upload(name: name.removingPercentEncoding ?? name, body: request.body)
            }
        }
        router.post("/api/send") { request, context in
            try await answer {
                let form = try await request.decode(as: SendForm.self, context: context)
                return ["transfer": try await app.send(from: form.from, to: form.to, uploads: form.uploads ?? [], paths: form.paths ?? [])]
            }
        }
    }

    struct SignInForm: Decodable {
        var address: String
        var password: String
        var server: String?
        var createAccount: Bool?
    }

    struct ContactForm: Decodable {
        var address: String
        var name: String?
        var server: String?
    }

    struct PromptForm: Decodable {
        var answer: PromptAnswer
    }

    struct SendForm: Decodable {
        var from: String
        var to: String
        var uploads: [String]?
        var paths: [String]?
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func asset(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Runs an action; its result as JSON, or its failure as `{"error": "…"}` with the
    /// status that fits it.
    static func answer(_ action: () async throws -> some Encodable) async throws -> Response {
        do {
            return json(try await action())
        } catch let error as VertexAppError {
            let status: HTTPResponse.Status = switch error.kind {
            case .badRequest: .badRequest
            case .notFound: .notFound
            case .failed: .unprocessableContent
            }
            return json(["error": error.description], status: status)
        } catch let error as HTTPError {
            return json(["error": error.body ?? "\(error.status)"], status: error.status)
        } catch is DecodingError {
            return json(["error": "the request's JSON is not what this route takes"], status: .badRequest)
        } catch {
            return json(["error": "\(error)"], status: .internalServerError)
        }
    }

    /// The state as server-sent events: a snapshot at once and after each change (at
    /// most five a second), and a comment every 15 s so a closed page is noticed.
    static func events(_ app: VertexApp) -> Response {
        let body = ResponseBody { writer in
            var seen = -1
            while !Task.isCancelled {
                let version = await app.changes.wait(after: seen, patience: .seconds(15))
                guard app.eventStreamsOpen else { break }
                if version == seen {
                    try await writer.write(ByteBuffer(string: ": still here\n\n"))
                    continue
                }
                seen = version
                let snapshot = try await app.snapshot()
                let data = try encoder.encode(snapshot)
                var buffer = ByteBuffer(string: "event: state\ndata: ")
                buffer.writeBytes(data)
                buffer.writeString("\n\n")
                try await writer.write(buffer)
                try await Task.sleep(for: .milliseconds(200))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream"], body: body)
    }
}
