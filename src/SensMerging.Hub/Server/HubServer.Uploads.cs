using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Hub.Server.Auth;
using SensMerging.Hub.Server.Store;

namespace SensMerging.Hub.Server;

/// <summary>
/// The Hub's write API over a <see cref="HubRepositoryStore"/>, as the official clients use it (huggingface_hub's
/// create_repo / upload_folder, @huggingface/hub's createRepo / uploadFiles / commit):
/// <c>POST /api/repos/create</c>; <c>POST /api/models/{repo}/preupload/{rev}</c> (which files go through LFS);
/// <c>POST /{repo}.git/info/lfs/objects/batch</c> (the git-lfs batch API, "basic" transfer: objects the server has get
/// no action, the others an upload link into this server); <c>PUT /api/lfs-upload/{ticket}</c> (the bytes, checked
/// against their SHA-256 and size before they are stored); <c>POST /api/models/{repo}/commit/{rev}</c> (NDJSON: header,
/// inline files in base64, LFS files by oid, deleted files and folders); branches; refs, commits and whoami-v2.
/// Writes need a bearer token of scope write from the token file: 401 without one or with an unknown one, 403 with a
/// read token, in the Hub's error shape (JSON <c>{"error": ...}</c> and X-Error-Message). Tokens never reach a log.
/// </summary>
public sealed partial class HubServer
{
    /// <summary>Files this size or larger go through LFS (as on the Hub).</summary>
    public const long LfsThresholdBytes = 10 * 1024 * 1024;

    /// <summary>The path of LFS upload links (each ends in a one-object ticket).</summary>
    public const string LfsUploadPath = "/api/lfs-upload/";

    private static readonly JsonSerializerOptions WriteJson = new(JsonSerializerDefaults.Web);

    private static void MapUploadApi(IEndpointRouteBuilder endpoints, IHubRepositorySource source, HubServerOptions options)
    {
        var logger = endpoints.ServiceProvider.GetService<ILoggerFactory>()?.CreateLogger<HubServer>() ?? (ILogger)NullLogger.Instance;
        var api = new UploadApi(source, options.Store!, options.Tokens, logger);
        endpoints.MapPost("/api/repos/create", (Delegate)api.CreateRepositoryAsync);
        endpoints.MapPost("/api/models/{org}/{name}/preupload/{rev}", api.PreuploadAsync);
        endpoints.MapPost("/{org}/{name}.git/info/lfs/objects/batch", api.LfsBatchAsync);
        endpoints.MapPut(LfsUploadPath + "{ticket}", api.LfsUploadAsync);
        endpoints.MapPost("/api/models/{org}/{name}/commit/{rev}", api.CommitAsync);
        endpoints.MapPost("/api/models/{org}/{name}/branch/{**branch}", api.CreateBranchAsync);
        endpoints.MapDelete("/api/models/{org}/{name}/branch/{**branch}", api.DeleteBranchAsync);
        endpoints.MapGet("/api/models/{org}/{name}/refs", api.RefsAsync);
        endpoints.MapGet("/api/models/{org}/{name}/commits/{rev}", api.CommitsAsync);
        endpoints.MapGet("/api/whoami-v2", (Delegate)api.WhoAmI);
    }

    /// <summary>A middleware that refuses requests without a valid token (reads not open). LFS upload links carry their own ticket.</summary>
    private static Func<HttpContext, RequestDelegate, Task> RequireAnyToken(HubServerOptions options) => async (context, next) =>
    {
        if (!context.Request.Path.StartsWithSegments(LfsUploadPath.TrimEnd('/'), StringComparison.Ordinal)
            && (options.Tokens is null || options.Tokens.Validate(BearerToken(context)) is null))
        {
            await HubApi.Error(context, StatusCodes.Status401Unauthorized, null,
                BearerToken(context) is null
                    ? "This server needs a token for reads: send Authorization: Bearer <token> (HF_TOKEN)."
                    : "Invalid credentials in Authorization header").ExecuteAsync(context);
            return;
        }

        await next(context);
    };

    /// <summary>The bearer token of a request, or null.</summary>
    public static string? BearerTokenOf(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return BearerToken(context);
    }

    private static string? BearerToken(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) && header.Length > 7 ? header[7..].Trim() : null;
    }

    private static bool IsLfsPath(string path, long size) =>
        size >= LfsThresholdBytes || FolderRepositorySource.LfsExtensions.Contains(Path.GetExtension(path));

    private sealed record UploadTicket(string RepoId, string Oid, long Size, string TokenName, DateTimeOffset Expires);

    private sealed partial class UploadApi(IHubRepositorySource source, HubRepositoryStore store, HubTokenFile? tokens, ILogger logger)
    {
        private static readonly TimeSpan TicketLifetime = TimeSpan.FromHours(1);
        private readonly ConcurrentDictionary<string, UploadTicket> _tickets = new(StringComparer.Ordinal);

        public async Task<IResult> CreateRepositoryAsync(HttpContext context)
        {
            var (token, denied) = RequireWrite(context, "create a repository");
            if (denied is not null)
            {
                return denied;
            }

            using var doc = await ReadJsonBodyAsync(context);
            if (doc is null)
            {
                return HubApi.Error(context, 400, null, "Expected a JSON object body with 'name'.");
            }

            var root = doc.RootElement;
            var name = Text(root, "name");
            var org = Text(root, "organization") ?? token!.Name;
            var type = Text(root, "type");
            if (type is not null and not "model")
            {
                return HubApi.Error(context, 400, null, $"Only model repositories are stored here, not '{type}'.");
            }

            var repoId = name is not null && name.Contains('/', StringComparison.Ordinal) ? name : $"{org}/{name}";
            if (name is null || !HubRepoId.TryParse(repoId, out var id) || id!.Org is null)
            {
                return HubApi.Error(context, 400, null, $"Invalid repository name '{repoId}'.");
            }

            bool isPrivate = (root.TryGetProperty("private", out var p) && p.ValueKind == JsonValueKind.True) || Text(root, "visibility") == "private";
            var url = $"{context.Request.Scheme}://{context.Request.Host}/{id.Id}";
            if ((await source.GetRevisionAsync(id.Id, "main", context.RequestAborted)).Status != HubRevisionStatus.RepositoryNotFound)
            {
                return Results.Json(new { error = "You already created this model repo", url }, WriteJson, statusCode: 409);
            }

            try
            {
                await store.CreateRepositoryAsync(id.Id, isPrivate, token!.Name, context.RequestAborted);
                if (root.TryGetProperty("files", out var files) && files.ValueKind == JsonValueKind.Array && files.GetArrayLength() > 0)
                {
                    var operations = new List<CommitOperation>();
                    foreach (var f in files.EnumerateArray())
                    {
                        operations.Add(await InlineFileAsync(f, context.RequestAborted));
                    }

                    await store.CommitAsync(id.Id, HubRepositoryStore.DefaultBranch,
                        new CommitRequest("initial files", null, null, token.Name, operations), context.RequestAborted);
                }
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }

            return Results.Json(new { url, name = id.Id, id = id.Id }, WriteJson);
        }

        public async Task<IResult> PreuploadAsync(HttpContext context, string org, string name, string rev)
        {
            var repoId = $"{org}/{name}";
            var (_, denied) = RequireWrite(context, $"upload to '{repoId}'");
            if (denied is not null)
            {
                return denied;
            }

            using var doc = await ReadJsonBodyAsync(context);
            if (doc is null || !doc.RootElement.TryGetProperty("files", out var files) || files.ValueKind != JsonValueKind.Array)
            {
                return HubApi.Error(context, 400, null, "Expected a JSON body {\"files\": [{\"path\", \"size\", \"sample\"}]}.");
            }

            StoredCommit? head;
            try
            {
                head = await ResolveStoredAsync(repoId, Uri.UnescapeDataString(rev), context.RequestAborted);
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }

            var existing = head.Files.ToDictionary(f => f.Path, StringComparer.Ordinal);
            var result = new List<object>();
            foreach (var f in files.EnumerateArray())
            {
                var path = Text(f, "path") ?? string.Empty;
                long size = f.TryGetProperty("size", out var s) && s.TryGetInt64(out var n) ? n : 0;
                bool lfs = IsLfsPath(path, size);
                var oid = existing.TryGetValue(path, out var old) && !old.Lfs && !lfs ? old.GitOid : null;
                result.Add(new { path, uploadMode = lfs ? "lfs" : "regular", shouldIgnore = false, oid });
            }

            return Results.Json(new { files = result, commitOid = head.Id }, WriteJson);
        }

        public async Task<IResult> LfsBatchAsync(HttpContext context, string org, string name)
        {
            var repoId = $"{org}/{name}";
            var (token, denied) = RequireWrite(context, $"upload to '{repoId}'");
            if (denied is not null)
            {
                return denied;
            }

            if (await store.GetRepositoryAsync(repoId, context.RequestAborted) is null)
            {
                return HubApi.Error(context, 404, "RepoNotFound", $"Repository '{repoId}' not found.");
            }

            using var doc = await ReadJsonBodyAsync(context);
            if (doc is null || !doc.RootElement.TryGetProperty("objects", out var objects) || objects.ValueKind != JsonValueKind.Array)
            {
                return HubApi.Error(context, 400, null, "Expected a git-lfs batch request {\"operation\", \"objects\": [{\"oid\", \"size\"}]}.");
            }

            if (Text(doc.RootElement, "operation") != "upload")
            {
                return HubApi.Error(context, 400, null, "Only the 'upload' operation is served here; download files through /{repo}/resolve/{rev}/{path}.");
            }

            var now = DateTimeOffset.UtcNow;
            foreach (var old in _tickets.Where(t => t.Value.Expires < now).ToList())
            {
                _tickets.TryRemove(old.Key, out _);
            }

            var baseUrl = $"{context.Request.Scheme}://{context.Request.Host}";
            var result = new List<object>();
            foreach (var o in objects.EnumerateArray())
            {
                var oid = Text(o, "oid");
                long size = o.TryGetProperty("size", out var s) && s.TryGetInt64(out var n) ? n : -1;
                if (!HubHashing.IsSha256Hex(oid) || size < 0)
                {
                    result.Add(new { oid, size, error = new { code = 422, message = "An object needs a SHA-256 oid (64 hex digits) and a size." } });
                }
                else if (store.HasBlob(oid!, size))
                {
                    result.Add(new { oid, size }); // already stored: nothing to upload
                }
                else
                {
                    var ticket = HubHashing.ToHex(RandomNumberGenerator.GetBytes(24));
                    _tickets[ticket] = new UploadTicket(repoId, oid!.ToLowerInvariant(), size, token!.Name, now + TicketLifetime);
                    result.Add(new
                    {
                        oid, size, authenticated = true,
                        actions = new { upload = new { href = baseUrl + LfsUploadPath + ticket, expires_in = (int)TicketLifetime.TotalSeconds } },
                    });
                }
            }

            var body = JsonSerializer.Serialize(new { transfer = "basic", objects = result, hash_algo = "sha256" }, WriteJson);
            return Results.Content(body, "application/vnd.git-lfs+json", Encoding.UTF8);
        }

        public async Task<IResult> LfsUploadAsync(HttpContext context, string ticket)
        {
            if (!_tickets.TryGetValue(ticket, out var t) || t.Expires < DateTimeOffset.UtcNow)
            {
                return HubApi.Error(context, 404, null, "This LFS upload link is unknown or expired: ask the LFS batch API for a new one.");
            }

            if (context.Request.ContentLength is { } length && length != t.Size)
            {
                return HubApi.Error(context, 400, null,
                    string.Create(CultureInfo.InvariantCulture, $"The upload has {length} bytes, the LFS batch request announced {t.Size} for {t.Oid}."));
            }

            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            {
                limit.MaxRequestBodySize = null;
            }

            try
            {
                await store.WriteBlobAsync(context.Request.Body, t.Oid, t.Size, context.RequestAborted);
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }

            _tickets.TryRemove(ticket, out _);
            LogLfsStored(logger, t.RepoId, t.Oid, t.Size, t.TokenName);
            return Results.Ok();
        }

        public async Task<IResult> CommitAsync(HttpContext context, string org, string name, string rev)
        {
            var repoId = $"{org}/{name}";
            var (token, denied) = RequireWrite(context, $"create a commit in '{repoId}'");
            if (denied is not null)
            {
                return denied;
            }

            if (context.Request.Query.ContainsKey("create_pr"))
            {
                return HubApi.Error(context, 400, null, "Pull requests are not supported by this server; commit to a branch.");
            }

            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            {
                limit.MaxRequestBodySize = null;
            }

            var branch = Uri.UnescapeDataString(rev);
            try
            {
                if (await store.GetRepositoryAsync(repoId, context.RequestAborted) is null)
                {
                    return HubApi.Error(context, 404, "RepoNotFound", $"Repository '{repoId}' not found.");
                }

                string title = "(no message)";
                string? description = null;
                string? parent = null;
                var operations = new List<CommitOperation>();
                using var reader = new StreamReader(context.Request.Body, Encoding.UTF8);
                int lineNumber = 0;
                while (await reader.ReadLineAsync(context.RequestAborted) is { } line)
                {
                    lineNumber++;
                    if (line.Length == 0)
                    {
                        continue;
                    }

                    using var doc = ParseLine(line, lineNumber);
                    var key = Text(doc.RootElement, "key");
                    if (!doc.RootElement.TryGetProperty("value", out var value) || value.ValueKind != JsonValueKind.Object)
                    {
                        throw new HubStoreException(HubStoreErrorKind.BadRequest, $"NDJSON line {lineNumber}: no 'value' object.");
                    }

                    switch (key)
                    {
                        case "header":
                            title = Text(value, "summary") is { Length: > 0 } summary ? summary : title;
                            description = Text(value, "description");
                            parent = Text(value, "parentCommit");
                            break;
                        case "file":
                            operations.Add(await InlineFileAsync(value, context.RequestAborted));
                            break;
                        case "lfsFile":
                            operations.Add(LfsFile(value, lineNumber));
                            break;
                        case "deletedFile":
                            operations.Add(new DeleteFileOperation(Text(value, "path") ?? string.Empty));
                            break;
                        case "deletedFolder":
                            operations.Add(new DeleteFolderOperation(Text(value, "path") ?? string.Empty));
                            break;
                        default:
                            throw new HubStoreException(HubStoreErrorKind.BadRequest, $"NDJSON line {lineNumber}: unknown key '{key}'.");
                    }
                }

                var commit = await store.CommitAsync(repoId, branch, new CommitRequest(title, description, parent, token!.Name, operations), context.RequestAborted);
                var baseUrl = $"{context.Request.Scheme}://{context.Request.Host}";
                return Results.Json(new
                {
                    success = true, commitOid = commit.Id, commitUrl = $"{baseUrl}/{repoId}/commit/{commit.Id}",
                    commitMessage = title, hookOutput = string.Empty, pullRequestUrl = (string?)null,
                }, WriteJson);
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }
        }

        public async Task<IResult> CreateBranchAsync(HttpContext context, string org, string name, string branch)
        {
            var repoId = $"{org}/{name}";
            var (_, denied) = RequireWrite(context, $"create a branch in '{repoId}'");
            if (denied is not null)
            {
                return denied;
            }

            using var doc = await ReadJsonBodyAsync(context);
            var start = doc is null ? null : Text(doc.RootElement, "startingPoint");
            try
            {
                var commit = await store.CreateBranchAsync(repoId, Uri.UnescapeDataString(branch), start, context.RequestAborted);
                return Results.Json(new { name = branch, targetCommit = commit }, WriteJson);
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }
        }

        public async Task<IResult> DeleteBranchAsync(HttpContext context, string org, string name, string branch)
        {
            var repoId = $"{org}/{name}";
            var (_, denied) = RequireWrite(context, $"delete a branch of '{repoId}'");
            if (denied is not null)
            {
                return denied;
            }

            try
            {
                await store.DeleteBranchAsync(repoId, Uri.UnescapeDataString(branch), context.RequestAborted);
                return Results.Ok();
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }
        }

        public async Task<IResult> RefsAsync(HttpContext context, string org, string name)
        {
            var repoId = $"{org}/{name}";
            if (await ReadDeniedAsync(context, repoId) is { } denied)
            {
                return denied;
            }

            var branches = await store.GetBranchesAsync(repoId, context.RequestAborted);
            return Results.Json(new
            {
                branches = branches.Select(b => new { name = b.Key, @ref = "refs/heads/" + b.Key, targetCommit = b.Value }),
                tags = Array.Empty<object>(), converts = Array.Empty<object>(),
            }, WriteJson);
        }

        public async Task<IResult> CommitsAsync(HttpContext context, string org, string name, string rev)
        {
            var repoId = $"{org}/{name}";
            if (await ReadDeniedAsync(context, repoId) is { } denied)
            {
                return denied;
            }

            var commits = new List<object>();
            try
            {
                var current = await ResolveStoredAsync(repoId, Uri.UnescapeDataString(rev), context.RequestAborted);
                while (commits.Count < 1000)
                {
                    commits.Add(new
                    {
                        id = current.Id, title = current.Title, message = current.Description ?? string.Empty,
                        authors = current.Author is null ? [] : new[] { new { user = current.Author } },
                        date = current.Date.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture),
                        parents = current.Parents,
                    });
                    if (current.Parents.Count == 0 || await store.ResolveAsync(repoId, current.Parents[0], context.RequestAborted) is not { } parent)
                    {
                        break;
                    }

                    current = parent;
                }
            }
            catch (HubStoreException ex)
            {
                return StoreError(context, ex);
            }

            return Results.Json(commits, WriteJson);
        }

        public IResult WhoAmI(HttpContext context)
        {
            var entry = tokens?.Validate(BearerToken(context));
            if (entry is null)
            {
                return HubApi.Error(context, 401, null, "Invalid credentials in Authorization header");
            }

            var role = entry.Scope == HubTokenScope.Write ? "write" : "read";
            return Results.Json(new
            {
                type = "user", name = entry.Name, fullname = entry.Name, orgs = Array.Empty<object>(),
                auth = new { type = "access_token", accessToken = new { displayName = entry.Name, role } },
            }, WriteJson);
        }

        private async Task<IResult?> ReadDeniedAsync(HttpContext context, string repoId)
        {
            var info = HubRepoId.TryParse(repoId, out var id) && id!.Org is not null ? await store.GetRepositoryAsync(repoId, context.RequestAborted) : null;
            if (info is null)
            {
                return HubApi.Error(context, 404, "RepoNotFound", $"Repository '{repoId}' not found.");
            }

            return info.Private && tokens?.Validate(BearerToken(context)) is null
                ? HubApi.Error(context, 401, "RepoNotFound", "Repository not found")
                : null;
        }

        private async Task<StoredCommit> ResolveStoredAsync(string repoId, string revision, CancellationToken cancellationToken)
        {
            if (await store.GetRepositoryAsync(repoId, cancellationToken) is null)
            {
                throw new HubStoreException(HubStoreErrorKind.RepositoryNotFound, $"Repository '{repoId}' not found.");
            }

            return await store.ResolveAsync(repoId, revision, cancellationToken)
                ?? throw new HubStoreException(HubStoreErrorKind.RevisionNotFound, $"Invalid rev id: {revision}");
        }

        private (HubTokenEntry? Token, IResult? Denied) RequireWrite(HttpContext context, string what)
        {
            var presented = BearerToken(context);
            if (tokens is null)
            {
                LogWriteRefused(logger, what, "-", "the server has no token file");
                return (null, HubApi.Error(context, 403, null, "This server accepts no uploads: start 'sensmerge serve' with --tokens FILE."));
            }

            if (presented is null)
            {
                LogWriteRefused(logger, what, "-", "no token");
                return (null, HubApi.Error(context, 401, null, $"You must be authenticated to {what}: send Authorization: Bearer <token> (HF_TOKEN)."));
            }

            var entry = tokens.Validate(presented);
            if (entry is null)
            {
                LogWriteRefused(logger, what, "-", "unknown token");
                return (null, HubApi.Error(context, 401, null, "Invalid credentials in Authorization header"));
            }

            if (entry.Scope != HubTokenScope.Write)
            {
                LogWriteRefused(logger, what, entry.Name, "read scope");
                return (null, HubApi.Error(context, 403, null, $"You don't have the rights to {what}: the token '{entry.Name}' has the read scope only."));
            }

            return (entry, null);
        }

        private async Task<CommitOperation> InlineFileAsync(JsonElement value, CancellationToken cancellationToken)
        {
            var path = HubRepositoryStore.CheckPath(Text(value, "path"));
            var content = Text(value, "content") ?? string.Empty;
            byte[] bytes;
            if (Text(value, "encoding") is null or "base64")
            {
                try
                {
                    bytes = Convert.FromBase64String(content);
                }
                catch (FormatException)
                {
                    throw new HubStoreException(HubStoreErrorKind.BadRequest, $"The content of '{path}' is not valid base64.");
                }
            }
            else if (Text(value, "encoding") == "utf-8")
            {
                bytes = Encoding.UTF8.GetBytes(content);
            }
            else
            {
                throw new HubStoreException(HubStoreErrorKind.BadRequest, $"Unknown encoding '{Text(value, "encoding")}' of '{path}'.");
            }

            using var stream = new MemoryStream(bytes, writable: false);
            var (sha256, size) = await store.WriteBlobAsync(stream, null, bytes.Length, cancellationToken);
            return new AddFileOperation(path, sha256, size, HubHashing.GitBlobSha1(bytes), Lfs: false);
        }

        private AddFileOperation LfsFile(JsonElement value, int lineNumber)
        {
            var path = HubRepositoryStore.CheckPath(Text(value, "path"));
            var oid = Text(value, "oid");
            if (!HubHashing.IsSha256Hex(oid) || (Text(value, "algo") is { } algo && algo != "sha256"))
            {
                throw new HubStoreException(HubStoreErrorKind.BadRequest, $"NDJSON line {lineNumber}: the LFS file '{path}' needs a sha256 oid.");
            }

            long size = value.TryGetProperty("size", out var s) && s.TryGetInt64(out var n) ? n
                : new FileInfo(store.BlobPath(oid!)) is { Exists: true } blob ? blob.Length : -1;
            return new AddFileOperation(path, oid!, size, null, Lfs: true);
        }

        private static JsonDocument ParseLine(string line, int lineNumber)
        {
            try
            {
                return JsonDocument.Parse(line);
            }
            catch (JsonException ex)
            {
                throw new HubStoreException(HubStoreErrorKind.BadRequest, $"NDJSON line {lineNumber} is not JSON: {ex.Message}");
            }
        }

        private static async Task<JsonDocument?> ReadJsonBodyAsync(HttpContext context)
        {
            try
            {
                var doc = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
                if (doc.RootElement.ValueKind == JsonValueKind.Object)
                {
                    return doc;
                }

                doc.Dispose();
                return null;
            }
            catch (JsonException)
            {
                return null;
            }
        }

        private static string? Text(JsonElement element, string name) =>
            element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

        private static IResult StoreError(HttpContext context, HubStoreException ex) => ex.Kind switch
        {
            HubStoreErrorKind.RepositoryNotFound => HubApi.Error(context, 404, "RepoNotFound", ex.Message),
            HubStoreErrorKind.RevisionNotFound => HubApi.Error(context, 404, "RevisionNotFound", ex.Message),
            HubStoreErrorKind.Conflict => HubApi.Error(context, 409, null, ex.Message),
            HubStoreErrorKind.ParentMismatch => HubApi.Error(context, 412, null, ex.Message),
            HubStoreErrorKind.LfsObjectMissing => HubApi.Error(context, 422, null, ex.Message),
            _ => HubApi.Error(context, 400, null, ex.Message),
        };

        [LoggerMessage(EventId = 7010, Level = LogLevel.Warning, Message = "Hub upload API: refused to {What} (token {TokenName}): {Reason}")]
        private static partial void LogWriteRefused(ILogger logger, string what, string tokenName, string reason);

        [LoggerMessage(EventId = 7011, Level = LogLevel.Information, Message = "Hub upload API: LFS object {Oid} ({Size} bytes) for {RepoId} stored (token {TokenName})")]
        private static partial void LogLfsStored(ILogger logger, string repoId, string oid, long size, string tokenName);
    }
}
