using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Net.Http.Headers;

namespace SensMerging.Hub.Server;

/// <summary>Settings of the Hub server.</summary>
public sealed class HubServerOptions
{
    /// <summary>Where to listen; port 0 picks a free port (see <see cref="HubServer.BaseAddress"/>). Loopback by default.</summary>
    public string Url { get; set; } = "http://127.0.0.1:0";

    /// <summary>Entries per page of the tree listing (later pages through Link rel="next").</summary>
    public int TreePageSize { get; set; } = 1000;

    /// <summary>
    /// Maps further endpoints on the same app and port, after the Hub API (<c>serve</c> adds the registry's web pages
    /// and <c>/api/registry</c> here). Literal routes win over the Hub's <c>/{org}/{name}/...</c> patterns.
    /// </summary>
    public Action<IEndpointRouteBuilder>? MapAdditionalEndpoints { get; set; }

    /// <summary>
    /// Where pushed repositories are stored; null: the server is read-only. With a store the Hub upload API is mapped
    /// (repo creation, preupload, LFS batch and upload, NDJSON commit, branches); serve its repositories by including a
    /// <see cref="Store.StoreRepositorySource"/> in the source.
    /// </summary>
    public Store.HubRepositoryStore? Store { get; set; }

    /// <summary>The tokens that may write (scope write) and read; null: every write is refused.</summary>
    public Auth.HubTokenFile? Tokens { get; set; }

    /// <summary>When true every request needs a valid token (read or write scope); reads are open by default.</summary>
    public bool ReadsNeedToken { get; set; }
}

/// <summary>Counters of what the server did (for tests and diagnostics).</summary>
public sealed class HubServerStats
{
    private long _requests;
    private long _resolveGets;
    private long _bytesServed;

    /// <summary>All requests.</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>GET requests on resolve URLs that returned a file (200 or 206).</summary>
    public long ResolveGets => Interlocked.Read(ref _resolveGets);

    /// <summary>Body bytes sent by those GET requests (as announced by Content-Length).</summary>
    public long BytesServed => Interlocked.Read(ref _bytesServed);

    internal void Request() => Interlocked.Increment(ref _requests);

    internal void FileServed(long bytes)
    {
        Interlocked.Increment(ref _resolveGets);
        Interlocked.Add(ref _bytesServed, bytes);
    }
}

/// <summary>
/// A read-only Hub-compatible server (model info, tree, paths-info, HEAD/GET resolve with ranges, Hub error headers)
/// over an <see cref="IHubRepositorySource"/>. Start it in-process with <see cref="StartAsync"/>, or add its endpoints to
/// an existing app with <see cref="MapHubApi"/>.
/// </summary>
public sealed partial class HubServer : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private readonly WebApplication _app;

    private HubServer(WebApplication app, Uri baseAddress, HubServerStats stats)
    {
        _app = app;
        BaseAddress = baseAddress;
        Stats = stats;
    }

    /// <summary>The address the server listens on, e.g. http://127.0.0.1:43121 (no trailing slash).</summary>
    public Uri BaseAddress { get; }

    /// <summary>The endpoint string to give clients (HF_ENDPOINT).</summary>
    public string Endpoint => BaseAddress.GetLeftPart(UriPartial.Authority);

    /// <summary>Counters.</summary>
    public HubServerStats Stats { get; }

    /// <summary>Starts a server over <paramref name="source"/> and returns once it listens.</summary>
    public static async Task<HubServer> StartAsync(
        IHubRepositorySource source, HubServerOptions? options = null, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        options ??= new HubServerOptions();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        if (loggerFactory is not null)
        {
            builder.Services.Replace(ServiceDescriptor.Singleton(loggerFactory));
        }

        builder.WebHost.UseUrls(options.Url);
        builder.WebHost.ConfigureKestrel(k => k.AddServerHeader = false);
        var app = builder.Build();
        var stats = new HubServerStats();
        if (options.ReadsNeedToken)
        {
            app.Use(RequireAnyToken(options));
        }

        MapHubApi(app, source, options, stats);
        options.MapAdditionalEndpoints?.Invoke(app);
        await app.StartAsync(cancellationToken);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("The Hub server started but reports no address.");
        return new HubServer(app, new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal)), stats);
    }

    /// <summary>Waits until the server stops (Ctrl+C in a console host).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    /// <summary>Stops listening.</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => _app.StopAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        try
        {
            await _app.StopAsync();
        }
        finally
        {
            await _app.DisposeAsync();
        }
    }

    /// <summary>Adds the Hub read API endpoints to <paramref name="endpoints"/>.</summary>
    public static void MapHubApi(IEndpointRouteBuilder endpoints, IHubRepositorySource source, HubServerOptions options, HubServerStats? stats = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.TreePageSize, 1);
        var api = new HubApi(source, options, stats ?? new HubServerStats());
        endpoints.MapGet("/api/models", (Delegate)api.ListModelsAsync);
        endpoints.MapGet("/api/models/{org}/{name}", (HttpContext c, string org, string name) => api.ModelInfoAsync(c, org, name, "main"));
        endpoints.MapGet("/api/models/{org}/{name}/revision/{rev}", api.ModelInfoAsync);
        endpoints.MapGet("/api/models/{org}/{name}/tree/{rev}/{**path}", api.TreeAsync);
        endpoints.MapPost("/api/models/{org}/{name}/paths-info/{rev}", api.PathsInfoAsync);
        endpoints.MapMethods("/{org}/{name}/resolve/{rev}/{**path}", [HttpMethods.Get, HttpMethods.Head], api.ResolveAsync);
        if (options.Store is not null)
        {
            MapUploadApi(endpoints, source, options);
        }
    }

    private sealed class HubApi(IHubRepositorySource source, HubServerOptions options, HubServerStats stats)
    {
        public async Task<IResult> ListModelsAsync(HttpContext context)
        {
            stats.Request();
            var repos = await source.ListRepositoriesAsync(context.RequestAborted);
            return Results.Json(repos.Select(r => new Dictionary<string, object> { ["id"] = r, ["_id"] = ObjectId(r) }), Json);
        }

        public async Task<IResult> ModelInfoAsync(HttpContext context, string org, string name, string rev)
        {
            stats.Request();
            var (snapshot, error) = await LookupAsync(context, org, name, rev, forFile: false);
            if (snapshot is null)
            {
                return error!;
            }

            var info = new ModelInfoDto(
                ObjectId(snapshot.RepoId), snapshot.RepoId, snapshot.RepoId, snapshot.Commit,
                snapshot.LastModified.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture),
                snapshot.Access.Private, snapshot.Access.Gated ? "manual" : false, false, [],
                [.. snapshot.Files.Select(f => new SiblingDto(f.Path, f.Size, f.GitOid,
                    f.IsLfs ? new SiblingLfsDto(f.Sha256!, f.Size, f.PointerSize) : null))]);
            return Results.Json(info, Json);
        }

        public async Task<IResult> TreeAsync(HttpContext context, string org, string name, string rev, string? path)
        {
            stats.Request();
            var (snapshot, error) = await LookupAsync(context, org, name, rev, forFile: false);
            if (snapshot is null)
            {
                return error!;
            }

            path = UnescapeSlashes(path ?? string.Empty).Trim('/');
            bool recursive = context.Request.Query["recursive"].ToString() is "true" or "True" or "1";
            var prefix = path.Length == 0 ? string.Empty : path + "/";
            var under = snapshot.Files.Where(f => f.Path.StartsWith(prefix, StringComparison.Ordinal)).ToList();
            if (path.Length > 0 && under.Count == 0)
            {
                return Error(context, StatusCodes.Status404NotFound, "EntryNotFound", $"Entry '{path}' not found in repository '{snapshot.RepoId}'.");
            }

            var entries = BuildEntries(snapshot, under, prefix, recursive);
            int cursor = int.TryParse(context.Request.Query["cursor"], NumberStyles.None, CultureInfo.InvariantCulture, out var c) ? c : 0;
            var page = entries.Skip(cursor).Take(options.TreePageSize).ToList();
            if (cursor + options.TreePageSize < entries.Count)
            {
                var request = context.Request;
                var query = QueryString.Create(request.Query
                    .Where(q => q.Key != "cursor")
                    .SelectMany(q => q.Value.Select(v => new KeyValuePair<string, string?>(q.Key, v)))
                    .Append(new KeyValuePair<string, string?>("cursor", (cursor + options.TreePageSize).ToString(CultureInfo.InvariantCulture))));
                var next = $"{request.Scheme}://{request.Host}{request.PathBase}{request.Path}{query}";
                context.Response.Headers.Link = $"<{next}>; rel=\"next\"";
            }

            return Results.Json(page, Json);
        }

        public async Task<IResult> PathsInfoAsync(HttpContext context, string org, string name, string rev)
        {
            stats.Request();
            var (snapshot, error) = await LookupAsync(context, org, name, rev, forFile: false);
            if (snapshot is null)
            {
                return error!;
            }

            var paths = new List<string>();
            if (context.Request.HasFormContentType)
            {
                var form = await context.Request.ReadFormAsync(context.RequestAborted);
                paths.AddRange(form["paths"].Where(p => p is not null).Select(p => p!));
            }
            else
            {
                try
                {
                    using var doc = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
                    if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("paths", out var p) && p.ValueKind == JsonValueKind.Array)
                    {
                        paths.AddRange(p.EnumerateArray().Where(e => e.ValueKind == JsonValueKind.String).Select(e => e.GetString()!));
                    }
                }
                catch (JsonException ex)
                {
                    return Error(context, StatusCodes.Status400BadRequest, null, $"Invalid JSON body: {ex.Message}");
                }
            }

            var result = new List<TreeEntryDto>();
            foreach (var raw in paths.Select(p => p.Trim('/')).Distinct(StringComparer.Ordinal))
            {
                var file = snapshot.Files.FirstOrDefault(f => f.Path == raw);
                if (file is not null)
                {
                    result.Add(FileEntry(file));
                }
                else if (raw.Length > 0 && snapshot.Files.Any(f => f.Path.StartsWith(raw + "/", StringComparison.Ordinal)))
                {
                    result.Add(DirectoryEntry(snapshot, raw));
                }
            }

            return Results.Json(result, Json);
        }

        public async Task<IResult> ResolveAsync(HttpContext context, string org, string name, string rev, string path)
        {
            stats.Request();
            var (snapshot, error) = await LookupAsync(context, org, name, rev, forFile: true);
            if (snapshot is null)
            {
                return error!;
            }

            path = UnescapeSlashes(path);
            var file = snapshot.Files.FirstOrDefault(f => f.Path == path);
            context.Response.Headers["X-Repo-Commit"] = snapshot.Commit;
            if (file is null)
            {
                return Error(context, StatusCodes.Status404NotFound, "EntryNotFound",
                    $"Entry '{path}' not found in repository '{snapshot.RepoId}' at revision '{snapshot.Commit}'.");
            }

            if (!RepositoryFileResolver.IsUnchangedRealFile(file.PhysicalPath))
            {
                // Gone, or replaced by a link since the listing: never follow it.
                return Error(context, StatusCodes.Status404NotFound, "EntryNotFound", $"Entry '{path}' is no longer on disk.");
            }

            if (HttpMethods.IsGet(context.Request.Method))
            {
                context.Response.OnCompleted(() =>
                {
                    if (context.Response.StatusCode is 200 or 206)
                    {
                        stats.FileServed(context.Response.ContentLength ?? 0);
                    }

                    return Task.CompletedTask;
                });
            }

            if (context.Features.Get<IHttpResponseBodyFeature>() is { } body and not LargeChunkFileBodyFeature)
            {
                context.Features.Set<IHttpResponseBodyFeature>(new LargeChunkFileBodyFeature(body));
            }

            return Results.File(file.PhysicalPath, "application/octet-stream", fileDownloadName: null, lastModified: null,
                entityTag: new EntityTagHeaderValue($"\"{file.Etag}\""), enableRangeProcessing: true);
        }

        private async Task<(HubRepositorySnapshot? Snapshot, IResult? Error)> LookupAsync(
            HttpContext context, string org, string name, string rev, bool forFile)
        {
            var repoId = $"{org}/{name}";
            rev = Uri.UnescapeDataString(rev);
            var lookup = await source.GetRevisionAsync(repoId, rev, context.RequestAborted);
            if (lookup.Status == HubRevisionStatus.RepositoryNotFound)
            {
                return (null, Error(context, StatusCodes.Status404NotFound, "RepoNotFound", $"Repository '{repoId}' not found."));
            }

            var snapshot = lookup.Snapshot;
            if (snapshot is not null && Authorize(context, snapshot, forFile) is { } denied)
            {
                return (null, denied);
            }

            if (lookup.Status == HubRevisionStatus.RevisionNotFound || snapshot is null)
            {
                return (null, Error(context, StatusCodes.Status404NotFound, "RevisionNotFound", $"Invalid rev id: {rev}"));
            }

            return (snapshot, null);
        }

        private static IResult? Authorize(HttpContext context, HubRepositorySnapshot snapshot, bool forFile)
        {
            var access = snapshot.Access;
            string? token = null;
            var header = context.Request.Headers.Authorization.ToString();
            if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            {
                token = header["Bearer ".Length..].Trim();
            }

            if (access.Private)
            {
                if (token is null)
                {
                    return Error(context, StatusCodes.Status401Unauthorized, "RepoNotFound", "Repository not found");
                }

                if (!access.Accepts(token))
                {
                    return Error(context, StatusCodes.Status401Unauthorized, null, "Invalid credentials in Authorization header");
                }
            }

            if (forFile && access.Gated)
            {
                if (token is null)
                {
                    return Error(context, StatusCodes.Status401Unauthorized, "GatedRepo",
                        $"Access to model {snapshot.RepoId} is restricted. You must have access to it and be authenticated to access it. Please log in.");
                }

                if (!access.GrantedTokens.Contains(token) && !access.Accepts(token))
                {
                    return Error(context, StatusCodes.Status403Forbidden, "GatedRepo",
                        $"Access to model {snapshot.RepoId} is restricted and you are not in the authorized list.");
                }
            }

            return null;
        }

        private static List<TreeEntryDto> BuildEntries(HubRepositorySnapshot snapshot, List<HubRepositoryFile> under, string prefix, bool recursive)
        {
            var entries = new List<TreeEntryDto>();
            var directories = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var file in under)
            {
                var rest = file.Path[prefix.Length..];
                var segments = rest.Split('/');
                for (int i = 1; i < segments.Length && (recursive || i == 1); i++)
                {
                    directories.Add(prefix + string.Join('/', segments.Take(i)));
                }

                if (recursive || segments.Length == 1)
                {
                    entries.Add(FileEntry(file));
                }
            }

            entries.AddRange(directories.Select(d => DirectoryEntry(snapshot, d)));
            entries.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
            return entries;
        }

        private static TreeEntryDto FileEntry(HubRepositoryFile f) =>
            new("file", f.GitOid, f.Size, f.Path, f.IsLfs ? new TreeLfsDto(f.Sha256!, f.Size, f.PointerSize) : null);

        private static TreeEntryDto DirectoryEntry(HubRepositorySnapshot snapshot, string path) =>
            new("directory", HubHashing.ToHex(SHA1.HashData(Encoding.UTF8.GetBytes(snapshot.Commit + ":" + path))), 0, path, null);

        private static string ObjectId(string repoId) => HubHashing.ToHex(SHA1.HashData(Encoding.UTF8.GetBytes(repoId)))[..24];

        /// <summary>Kestrel decodes every escape in the path except %2F; clients that encode '/' in file paths send it.</summary>
        private static string UnescapeSlashes(string value) =>
            value.Replace("%2F", "/", StringComparison.OrdinalIgnoreCase);

        internal static IResult Error(HttpContext context, int status, string? code, string message)
        {
            if (code is not null)
            {
                context.Response.Headers["X-Error-Code"] = code;
            }

            context.Response.Headers["X-Error-Message"] = AsciiHeader(message);
            return Results.Json(new ErrorDto(message), Json, statusCode: status);
        }

        private static string AsciiHeader(string value) =>
            string.Create(value.Length, value, static (span, v) =>
            {
                for (int i = 0; i < v.Length; i++)
                {
                    span[i] = v[i] is >= ' ' and <= '~' ? v[i] : '?';
                }
            });
    }

    private sealed record ErrorDto([property: JsonPropertyName("error")] string Error);

    private sealed record SiblingLfsDto(
        [property: JsonPropertyName("sha256")] string Sha256,
        [property: JsonPropertyName("size")] long Size,
        [property: JsonPropertyName("pointerSize")] long PointerSize);

    private sealed record SiblingDto(
        [property: JsonPropertyName("rfilename")] string RFilename,
        [property: JsonPropertyName("size")] long Size,
        [property: JsonPropertyName("blobId")] string BlobId,
        [property: JsonPropertyName("lfs")] SiblingLfsDto? Lfs);

    private sealed record ModelInfoDto(
        [property: JsonPropertyName("_id")] string ObjectId,
        [property: JsonPropertyName("id")] string Id,
        [property: JsonPropertyName("modelId")] string ModelId,
        [property: JsonPropertyName("sha")] string Sha,
        [property: JsonPropertyName("lastModified")] string LastModified,
        [property: JsonPropertyName("private")] bool Private,
        [property: JsonPropertyName("gated")] object Gated,
        [property: JsonPropertyName("disabled")] bool Disabled,
        [property: JsonPropertyName("tags")] string[] Tags,
        [property: JsonPropertyName("siblings")] SiblingDto[] Siblings);

    private sealed record TreeLfsDto(
        [property: JsonPropertyName("oid")] string Oid,
        [property: JsonPropertyName("size")] long Size,
        [property: JsonPropertyName("pointerSize")] long PointerSize);

    private sealed record TreeEntryDto(
        [property: JsonPropertyName("type")] string Type,
        [property: JsonPropertyName("oid")] string Oid,
        [property: JsonPropertyName("size")] long Size,
        [property: JsonPropertyName("path")] string Path,
        [property: JsonPropertyName("lfs")] TreeLfsDto? Lfs);
}
