using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SensMerging.Hub.Client;

/// <summary>
/// The Hub read API over HTTP: model info, tree listing (paged), paths-info, HEAD file metadata and file downloads.
/// Redirects are followed by hand (HEAD: relative ones only, as the Python client does). Errors become the typed
/// <see cref="HubException"/> subclasses. The token is sent as a bearer token to the endpoint's host only and never
/// appears in logs or exception messages.
/// </summary>
public sealed partial class HubClient
{
    private const int MaxRedirects = 10;
    private readonly HttpClient _http;
    private readonly HubOptions _options;
    private readonly ILogger<HubClient> _logger;
    private readonly Uri _endpoint;

    /// <summary>Creates a client over an HttpClient whose handler does not follow redirects by itself.</summary>
    public HubClient(HttpClient http, HubOptions options, ILogger<HubClient>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(options);
        _http = http;
        _options = options;
        _logger = logger ?? NullLogger<HubClient>.Instance;
        _endpoint = new Uri(options.Endpoint + "/", UriKind.Absolute);
    }

    /// <summary>The settings this client uses.</summary>
    public HubOptions Options => _options;

    /// <summary>GET /api/models/{repo}[/revision/{rev}]: resolves a revision to its commit and lists the files.</summary>
    public async Task<HubModelInfo> GetModelInfoAsync(string repoId, string? revision = null, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        var relative = revision is null
            ? $"api/models/{repo.Id}"
            : $"api/models/{repo.Id}/revision/{Uri.EscapeDataString(revision)}";
        var context = new RequestContext(repo.Id, revision ?? "main", null);
        using var response = await SendAsync(HttpMethod.Get, new Uri(_endpoint, relative), context, null, cancellationToken);
        using var doc = await ReadJsonAsync(response, context, cancellationToken);
        return HubModelInfo.Parse(doc.RootElement, repo.Id);
    }

    /// <summary>GET /api/models/{repo}/tree/{rev}[/{path}], following the Link rel="next" pages.</summary>
    public async Task<IReadOnlyList<HubTreeEntry>> ListTreeAsync(
        string repoId, string revision, string? path = null, bool recursive = true, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        ArgumentException.ThrowIfNullOrEmpty(revision);
        var relative = $"api/models/{repo.Id}/tree/{Uri.EscapeDataString(revision)}"
            + (string.IsNullOrEmpty(path) ? string.Empty : "/" + EscapePath(path))
            + $"?recursive={(recursive ? "true" : "false")}&expand=false";
        var context = new RequestContext(repo.Id, revision, path);
        var entries = new List<HubTreeEntry>();
        Uri? next = new(_endpoint, relative);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        Uri? previous = null;
        int pages = 0;
        while (next is not null)
        {
            if (!seen.Add(next.AbsoluteUri))
            {
                LogTreeCycle(_logger, repo.Id, revision, previous!.AbsoluteUri, next.AbsoluteUri);
                throw new HubException(
                    string.Create(CultureInfo.InvariantCulture,
                        $"Tree listing of '{repo.Id}' at '{revision}' loops: page {pages} ('{previous!.AbsoluteUri}') links with Link rel=\"next\" back to '{next.AbsoluteUri}', which was already listed (a Link: next cycle)."),
                    repo.Id, revision);
            }

            if (++pages > 100_000)
            {
                throw new HubException($"Tree listing of '{repo.Id}' at '{revision}' did not end after {pages} pages.", repo.Id, revision);
            }

            using var response = await SendAsync(HttpMethod.Get, next, context, null, cancellationToken);
            using (var doc = await ReadJsonAsync(response, context, cancellationToken))
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Array)
                {
                    throw new HubException($"Tree listing of '{repo.Id}' at '{revision}' is not a JSON array.", repo.Id, revision);
                }

                foreach (var e in doc.RootElement.EnumerateArray())
                {
                    entries.Add(HubTreeEntry.Parse(e));
                }
            }

            previous = next;
            next = ParseNextLink(response, next);
        }

        LogTreeListed(_logger, repo.Id, revision, entries.Count, pages);
        return entries;
    }

    /// <summary>POST /api/models/{repo}/paths-info/{rev}: the tree entries of the given paths (missing ones are absent).</summary>
    public async Task<IReadOnlyList<HubTreeEntry>> GetPathsInfoAsync(
        string repoId, string revision, IEnumerable<string> paths, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        ArgumentNullException.ThrowIfNull(paths);
        var context = new RequestContext(repo.Id, revision, null);
        var uri = new Uri(_endpoint, $"api/models/{repo.Id}/paths-info/{Uri.EscapeDataString(revision)}");
        var body = new PathsInfoRequest([.. paths], true);
        using var response = await SendAsync(HttpMethod.Post, uri, context,
            r => r.Content = JsonContent.Create(body, HubJsonContext.Default.PathsInfoRequest), cancellationToken);
        using var doc = await ReadJsonAsync(response, context, cancellationToken);
        return [.. doc.RootElement.EnumerateArray().Select(HubTreeEntry.Parse)];
    }

    /// <summary>
    /// HEAD /{repo}/resolve/{rev}/{path}: commit, etag (quotes and W/ stripped; X-Linked-Etag preferred) and size
    /// (X-Linked-Size preferred), following relative redirects only.
    /// </summary>
    public async Task<HubFileMetadata> GetFileMetadataAsync(string repoId, string revision, string path, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        HubPaths.EnsureSafe(repo.Id, revision, path);
        var context = new RequestContext(repo.Id, revision, path);
        var uri = ResolveUri(repo, revision, path);
        string? linkedEtag = null;
        long? linkedSize = null;
        for (int hop = 0; ; hop++)
        {
            using var response = await SendOnceAsync(HttpMethod.Head, uri, context,
                r => r.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity")), cancellationToken);
            linkedEtag ??= NormalizeEtag(Header(response, "X-Linked-Etag"));
            linkedSize ??= long.TryParse(Header(response, "X-Linked-Size"), NumberStyles.None, CultureInfo.InvariantCulture, out var ls) ? ls : null;
            if (IsRedirect(response.StatusCode) && response.Headers.Location is { } location && !location.IsAbsoluteUri && hop < MaxRedirects)
            {
                uri = FollowRedirect(uri, location, context);
                continue;
            }

            if (!response.IsSuccessStatusCode && !IsRedirect(response.StatusCode))
            {
                throw await ToExceptionAsync(response, context, cancellationToken);
            }

            var etag = linkedEtag ?? NormalizeEtag(response.Headers.ETag?.Tag ?? Header(response, "ETag"));
            var size = linkedSize ?? response.Content.Headers.ContentLength;
            return new HubFileMetadata(Header(response, "X-Repo-Commit"), etag, size, response.Headers.Location is { } abs ? abs : uri);
        }
    }

    /// <summary>
    /// GET /{repo}/resolve/{rev}/{path} from byte <paramref name="offset"/> (a Range request when &gt; 0). The caller
    /// owns the result and must check <see cref="HubFileResponse.StartOffset"/>: a server may answer 200 from byte 0.
    /// </summary>
    public async Task<HubFileResponse> OpenFileAsync(string repoId, string revision, string path, long offset, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        HubPaths.EnsureSafe(repo.Id, revision, path);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        var context = new RequestContext(repo.Id, revision, path);
        var response = await SendAsync(HttpMethod.Get, ResolveUri(repo, revision, path), context, r =>
        {
            r.Options.Set(HubAttemptTimeoutHandler.KindKey, HubRequestKind.Download);
            r.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            if (offset > 0)
            {
                r.Headers.Range = new RangeHeaderValue(offset, null);
            }
        }, cancellationToken);
        try
        {
            long start = 0;
            long? total = response.Content.Headers.ContentLength;
            if (response.StatusCode == HttpStatusCode.PartialContent)
            {
                var range = response.Content.Headers.ContentRange;
                start = range?.From ?? 0;
                total = range?.Length;
            }

            var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
            return new HubFileResponse(response, stream, start, total,
                NormalizeEtag(Header(response, "X-Linked-Etag") ?? response.Headers.ETag?.Tag), Header(response, "X-Repo-Commit"));
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    internal Uri ResolveUri(HubRepoId repo, string revision, string path) =>
        new(_endpoint, $"{repo.Id}/resolve/{Uri.EscapeDataString(revision)}/{EscapePath(path)}");

    /// <summary>Strips quotes and a weak "W/" prefix from an etag.</summary>
    public static string? NormalizeEtag(string? etag)
    {
        if (string.IsNullOrWhiteSpace(etag))
        {
            return null;
        }

        var e = etag.Trim();
        if (e.StartsWith("W/", StringComparison.OrdinalIgnoreCase))
        {
            e = e[2..];
        }

        return e.Trim('"');
    }

    private static string EscapePath(string path) => string.Join('/', path.Split('/').Select(Uri.EscapeDataString));

    private static bool IsRedirect(HttpStatusCode status) => (int)status is 301 or 302 or 303 or 307 or 308;

    /// <summary>The redirect target, when it is http(s); anything else (file://, ftp://, data:) is refused.</summary>
    private Uri FollowRedirect(Uri current, Uri location, RequestContext context)
    {
        var target = new Uri(current, location);
        if (target.Scheme == Uri.UriSchemeHttp || target.Scheme == Uri.UriSchemeHttps)
        {
            return target;
        }

        var shown = target.IsFile ? target.AbsoluteUri : target.GetLeftPart(UriPartial.Path);
        LogRedirectRefused(_logger, context.RepoId, context.Path ?? "(metadata)", target.Scheme);
        throw new HubUnsafeRedirectException(context.RepoId, context.Revision, context.Path, shown,
            $"the '{target.Scheme}' scheme is not followed, only http and https");
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault()
        : response.Content.Headers.TryGetValues(name, out var cv) ? cv.FirstOrDefault() : null;

    private static Uri? ParseNextLink(HttpResponseMessage response, Uri current)
    {
        if (!response.Headers.TryGetValues("Link", out var links))
        {
            return null;
        }

        foreach (var part in links.SelectMany(l => l.Split(',')))
        {
            var segments = part.Split(';');
            if (segments.Length < 2 || !segments.Skip(1).Any(s => s.Trim().Replace(" ", string.Empty, StringComparison.Ordinal) is "rel=\"next\"" or "rel=next"))
            {
                continue;
            }

            var url = segments[0].Trim().TrimStart('<').TrimEnd('>');
            return Uri.TryCreate(current, url, out var next) ? next : null;
        }

        return null;
    }

    private async Task<HttpResponseMessage> SendAsync(
        HttpMethod method, Uri uri, RequestContext context, Action<HttpRequestMessage>? configure, CancellationToken cancellationToken)
    {
        for (int hop = 0; ; hop++)
        {
            var response = await SendOnceAsync(method, uri, context, configure, cancellationToken);
            if (IsRedirect(response.StatusCode) && response.Headers.Location is { } location && hop < MaxRedirects)
            {
                response.Dispose();
                uri = FollowRedirect(uri, location, context);
                continue;
            }

            if (!response.IsSuccessStatusCode)
            {
                try
                {
                    throw await ToExceptionAsync(response, context, cancellationToken);
                }
                finally
                {
                    response.Dispose();
                }
            }

            return response;
        }
    }

    private async Task<HttpResponseMessage> SendOnceAsync(
        HttpMethod method, Uri uri, RequestContext context, Action<HttpRequestMessage>? configure, CancellationToken cancellationToken)
    {
        if (_options.Offline)
        {
            throw new HubException($"Offline mode (HF_HUB_OFFLINE=1): refusing to contact the Hub for repository '{context.RepoId}'.", context.RepoId, context.Revision, context.Path);
        }

        using var request = new HttpRequestMessage(method, uri);
        request.Headers.UserAgent.ParseAdd(_options.UserAgent);
        if (_options.Token is { Length: > 0 } token && Uri.Compare(uri, _endpoint, UriComponents.SchemeAndServer, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        configure?.Invoke(request);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        }
        catch (HubAttemptTimeoutException ex)
        {
            int attempts = Math.Max(0, _options.MaxRetryAttempts) + 1;
            LogTimedOut(_logger, method.Method, uri.GetLeftPart(UriPartial.Path), ex.Timeout.TotalSeconds, attempts);
            throw new HubTimeoutException(context.RepoId, context.Revision, context.Path, ex.Timeout, HubTimeoutException.SettingOf(ex.Kind), attempts,
                ex.Kind == HubRequestKind.Download
                    ? $"no response to the download within {HubTimeoutException.Format(ex.Timeout)}"
                    : $"no complete answer to {method.Method} {uri.AbsolutePath} within {HubTimeoutException.Format(ex.Timeout)}",
                ex);
        }
        catch (HttpRequestException ex)
        {
            LogUnreachable(_logger, method.Method, uri.GetLeftPart(UriPartial.Path), ex.HttpRequestError);
            throw new HubServerUnreachableException(_options.Endpoint, context.RepoId, ex);
        }
        catch (SocketException ex)
        {
            throw new HubServerUnreachableException(_options.Endpoint, context.RepoId, ex);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            throw new HubServerUnreachableException(_options.Endpoint, context.RepoId, new TimeoutException("The request timed out.", ex));
        }

        LogResponse(_logger, method.Method, uri.GetLeftPart(UriPartial.Path), (int)response.StatusCode);
        return response;
    }

    private async Task<JsonDocument> ReadJsonAsync(HttpResponseMessage response, RequestContext context, CancellationToken cancellationToken)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        try
        {
            return await JsonDocument.ParseAsync(stream, default, cancellationToken);
        }
        catch (JsonException ex)
        {
            throw new HubException($"The Hub answered invalid JSON for repository '{context.RepoId}': {ex.Message}", context.RepoId, context.Revision, context.Path, ex);
        }
    }

    private async Task<HubException> ToExceptionAsync(HttpResponseMessage response, RequestContext context, CancellationToken cancellationToken)
    {
        var code = Header(response, "X-Error-Code");
        var message = Header(response, "X-Error-Message");
        if (message is null && response.Content.Headers.ContentType?.MediaType == "application/json")
        {
            // A download's error body is not buffered by the attempt: bound its read as well.
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bounded.CancelAfter(_options.DownloadTimeout);
            try
            {
                var body = await response.Content.ReadAsStringAsync(bounded.Token);
                using var doc = JsonDocument.Parse(body);
                message = doc.RootElement.ValueKind == JsonValueKind.Object ? HubModelInfo.GetString(doc.RootElement, "error") : null;
            }
            catch (JsonException)
            {
                message = null;
            }
            catch (Exception ex) when (ex is OperationCanceledException or HttpRequestException or IOException && !cancellationToken.IsCancellationRequested)
            {
                message = null;
            }
        }

        message = Scrub(message);
        int status = (int)response.StatusCode;
        HubException error = code switch
        {
            "RepoNotFound" => new HubRepositoryNotFoundException(context.RepoId, message),
            "RevisionNotFound" => new HubRevisionNotFoundException(context.RepoId, context.Revision, message),
            "EntryNotFound" => new HubEntryNotFoundException(context.RepoId, context.Revision, context.Path ?? "(unknown)", message),
            "GatedRepo" => new HubGatedRepoException(context.RepoId, context.Revision, context.Path, message),
            _ when status == 401 && message == "Invalid credentials in Authorization header" => new HubUnauthorizedException(context.RepoId, message),
            _ when status == 401 => new HubRepositoryNotFoundException(context.RepoId, message),
            _ when status == 404 && context.Path is not null => new HubEntryNotFoundException(context.RepoId, context.Revision, context.Path, message),
            _ when status == 404 => new HubRepositoryNotFoundException(context.RepoId, message),
            _ => new HubException(
                string.Create(CultureInfo.InvariantCulture,
                    $"The Hub answered {status} {response.ReasonPhrase} for repository '{context.RepoId}' at revision '{context.Revision}'{(context.Path is null ? string.Empty : $", file '{context.Path}'")}.{(message is null ? string.Empty : $" Server said: {message}")}"),
                context.RepoId, context.Revision, context.Path),
        };
        error.StatusCode = status;
        if (error is HubEntryNotFoundException notFound)
        {
            notFound.Commit = Header(response, "X-Repo-Commit");
        }

        return error;
    }

    private string? Scrub(string? message) =>
        message is null || _options.Token is not { Length: > 0 } token ? message : message.Replace(token, "***", StringComparison.Ordinal);

    [LoggerMessage(EventId = 5301, Level = LogLevel.Debug, Message = "{Method} {Url} -> {Status}")]
    private static partial void LogResponse(ILogger logger, string method, string url, int status);

    [LoggerMessage(EventId = 5302, Level = LogLevel.Warning, Message = "{Method} {Url} failed: server unreachable ({Error})")]
    private static partial void LogUnreachable(ILogger logger, string method, string url, HttpRequestError error);

    [LoggerMessage(EventId = 5101, Level = LogLevel.Warning, Message = "{Method} {Url}: no answer within {Seconds} s on any of {Attempts} attempt(s)")]
    private static partial void LogTimedOut(ILogger logger, string method, string url, double seconds, int attempts);

    [LoggerMessage(EventId = 5102, Level = LogLevel.Warning, Message = "{RepoId}: refused a redirect for '{Path}' to a '{Scheme}' URL")]
    private static partial void LogRedirectRefused(ILogger logger, string repoId, string path, string scheme);

    [LoggerMessage(EventId = 5103, Level = LogLevel.Warning, Message = "{RepoId}@{Revision}: tree page {Page} links back to {Next} (Link: next cycle)")]
    private static partial void LogTreeCycle(ILogger logger, string repoId, string revision, string page, string next);

    [LoggerMessage(EventId = 5303, Level = LogLevel.Debug, Message = "Listed {Count} tree entries of {RepoId} at {Revision} in {Pages} page(s)")]
    private static partial void LogTreeListed(ILogger logger, string repoId, string revision, int count, int pages);

    private sealed record RequestContext(string RepoId, string Revision, string? Path);
}

/// <summary>An open download: the response stream from <see cref="StartOffset"/>; dispose it when done.</summary>
public sealed class HubFileResponse(HttpResponseMessage response, Stream content, long startOffset, long? totalLength, string? etag, string? commit)
    : IAsyncDisposable, IDisposable
{
    /// <summary>The body stream.</summary>
    public Stream Content { get; } = content;

    /// <summary>Byte offset of the first byte of <see cref="Content"/> in the file (0 unless a range was honoured).</summary>
    public long StartOffset { get; } = startOffset;

    /// <summary>Total file size, when the server said it.</summary>
    public long? TotalLength { get; } = totalLength;

    /// <summary>The etag the server sent (normalised), if any.</summary>
    public string? Etag { get; } = etag;

    /// <summary>X-Repo-Commit, if sent.</summary>
    public string? Commit { get; } = commit;

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await Content.DisposeAsync();
        response.Dispose();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Content.Dispose();
        response.Dispose();
    }
}
