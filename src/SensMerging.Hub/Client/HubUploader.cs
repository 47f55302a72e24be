using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SensMerging.Hub.Client;

/// <summary>What a push did.</summary>
/// <param name="RepoId">The repository.</param>
/// <param name="Branch">The branch.</param>
/// <param name="Commit">The commit the push made.</param>
/// <param name="CommitUrl">Its URL as the Hub gives it.</param>
/// <param name="Files">Files in the pushed folder.</param>
/// <param name="LfsUploaded">LFS objects uploaded in this push.</param>
/// <param name="BytesUploaded">Bytes sent as LFS objects.</param>
/// <param name="LfsSkipped">LFS objects the Hub already had (not sent again).</param>
/// <param name="InlineSkipped">Small files unchanged on the branch (not sent again).</param>
public sealed record HubPushResult(string RepoId, string Branch, string Commit, string CommitUrl, int Files, int LfsUploaded, long BytesUploaded, int LfsSkipped, int InlineSkipped);

/// <summary>
/// Pushes a folder to a Hub over its upload protocol, as the official clients do: create the repository (an existing
/// one is fine) and the branch, ask which files go through LFS (preupload), ask the LFS batch API which objects it
/// lacks and upload only those (basic transfer: one PUT each, plus the verify call when the Hub asks for it), then one
/// NDJSON commit (small files inline in base64, large ones by SHA-256 oid). A push that was interrupted is resumed by
/// running it again: objects already on the Hub are not sent again. The token goes to the endpoint only (upload links
/// elsewhere, such as storage URLs, get none) and never into logs or messages.
/// </summary>
public sealed partial class HubUploader
{
    private const int BatchSize = 100;
    private readonly HttpClient _http;
    private readonly HubOptions _options;
    private readonly ILogger<HubUploader> _logger;
    private readonly Uri _endpoint;

    public HubUploader(HttpClient http, HubOptions options, ILogger<HubUploader>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(options);
        _http = http;
        _options = options;
        _logger = logger ?? NullLogger<HubUploader>.Instance;
        _endpoint = new Uri(options.Endpoint + "/", UriKind.Absolute);
    }

    /// <summary>Pushes every file under <paramref name="folder"/> (but .git) to <paramref name="repoId"/>@<paramref name="branch"/>.</summary>
    public async Task<HubPushResult> PushFolderAsync(
        string folder, string repoId, string? branch = null, string? message = null, bool isPrivate = false, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        if (repo.Org is null)
        {
            throw new ArgumentException($"push needs a repository id of the form org/name, not '{repoId}'");
        }

        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"folder '{Path.GetFullPath(folder)}' does not exist");
        }

        if (_options.Token is not { Length: > 0 })
        {
            throw new HubException($"Pushing to '{repo.Id}' needs a token with write access: set HF_TOKEN (sensmerge tokens create NAME --scope write for a sensmerge serve).", repo.Id);
        }

        branch ??= "main";
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => (Full: f, Path: Path.GetRelativePath(folder, f).Replace('\\', '/')))
            .Where(f => !f.Path.Split('/').Contains(".git"))
            .OrderBy(f => f.Path, StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0)
        {
            throw new ArgumentException($"folder '{Path.GetFullPath(folder)}' holds no files to push");
        }

        await CreateRepositoryAsync(repo, isPrivate, cancellationToken);
        if (branch != "main")
        {
            await CreateBranchAsync(repo, branch, cancellationToken);
        }

        // Hash once: SHA-256 (the LFS oid) and the git blob sha1 (to skip small files the branch already has).
        var local = new List<LocalFile>(files.Count);
        foreach (var (full, path) in files)
        {
            var (sha256, gitSha1, length) = await HubHashing.HashFileAsync(full, true, 1 << 20, cancellationToken);
            local.Add(new LocalFile(full, path, length, sha256, gitSha1!));
        }

        var modes = new Dictionary<string, (bool Lfs, bool Skip)>(StringComparer.Ordinal);
        foreach (var batch in local.Chunk(BatchSize))
        {
            var body = new { files = await Task.WhenAll(batch.Select(async f => new { path = f.Path, size = f.Size, sample = Convert.ToBase64String(await SampleAsync(f.FullPath, cancellationToken)) })) };
            using var doc = await SendJsonAsync(HttpMethod.Post, $"api/models/{repo.Id}/preupload/{Uri.EscapeDataString(branch)}", body, repo.Id, cancellationToken);
            foreach (var f in doc!.RootElement.GetProperty("files").EnumerateArray())
            {
                var path = f.GetProperty("path").GetString()!;
                bool lfs = f.GetProperty("uploadMode").GetString() == "lfs";
                bool ignore = f.TryGetProperty("shouldIgnore", out var i) && i.ValueKind == JsonValueKind.True;
                var remoteOid = f.TryGetProperty("oid", out var o) && o.ValueKind == JsonValueKind.String ? o.GetString() : null;
                bool unchanged = !lfs && remoteOid is not null && local.First(l => l.Path == path).GitSha1 == remoteOid;
                modes[path] = (lfs, ignore || unchanged);
            }
        }

        int uploaded = 0, skipped = 0;
        long bytes = 0;
        var lfsFiles = local.Where(f => modes.TryGetValue(f.Path, out var m) && m.Lfs && !m.Skip).ToList();
        foreach (var batch in lfsFiles.DistinctBy(f => f.Sha256).Chunk(BatchSize))
        {
            var body = new
            {
                operation = "upload", transfers = new[] { "basic" }, hash_algo = "sha_256", @ref = new { name = branch },
                objects = batch.Select(f => new { oid = f.Sha256, size = f.Size }),
            };
            using var doc = await SendJsonAsync(HttpMethod.Post, $"{repo.Id}.git/info/lfs/objects/batch", body, repo.Id, cancellationToken, "application/vnd.git-lfs+json");
            foreach (var obj in doc!.RootElement.GetProperty("objects").EnumerateArray())
            {
                var oid = obj.GetProperty("oid").GetString()!;
                var file = batch.First(f => f.Sha256 == oid);
                if (obj.TryGetProperty("error", out var error))
                {
                    throw new HubException($"The Hub refused the LFS object of '{file.Path}': {error.GetProperty("message").GetString()}", repo.Id, branch, file.Path);
                }

                if (!obj.TryGetProperty("actions", out var actions) || !actions.TryGetProperty("upload", out var upload))
                {
                    skipped++;
                    LogLfsSkipped(_logger, repo.Id, file.Path, file.Size);
                    continue;
                }

                await UploadAsync(repo.Id, file, upload, actions.TryGetProperty("verify", out var verify) ? verify : null, cancellationToken);
                uploaded++;
                bytes += file.Size;
            }
        }

        var lines = new List<object> { new { key = "header", value = new { summary = message ?? $"Upload {files.Count} files with sensmerge hub push", description = string.Empty } } };
        int inlineSkipped = 0;
        foreach (var f in local)
        {
            var (lfs, skip) = modes.GetValueOrDefault(f.Path);
            if (skip)
            {
                inlineSkipped += lfs ? 0 : 1;
            }
            else if (lfs)
            {
                lines.Add(new { key = "lfsFile", value = new { path = f.Path, algo = "sha256", oid = f.Sha256, size = f.Size } });
            }
            else
            {
                var content = await File.ReadAllBytesAsync(f.FullPath, cancellationToken);
                lines.Add(new { key = "file", value = new { content = Convert.ToBase64String(content), path = f.Path, encoding = "base64" } });
            }
        }

        var ndjson = string.Join('\n', lines.Select(l => JsonSerializer.Serialize(l)));
        using var commitDoc = await SendAsync(HttpMethod.Post, $"api/models/{repo.Id}/commit/{Uri.EscapeDataString(branch)}",
            new StringContent(ndjson, Encoding.UTF8, "application/x-ndjson"), repo.Id, cancellationToken);
        var commit = commitDoc!.RootElement.GetProperty("commitOid").GetString()!;
        var url = commitDoc.RootElement.TryGetProperty("commitUrl", out var u) ? u.GetString() ?? string.Empty : string.Empty;
        LogPushed(_logger, repo.Id, branch, commit, uploaded, bytes, skipped);
        return new HubPushResult(repo.Id, branch, commit, url, files.Count, uploaded, bytes, skipped, inlineSkipped);
    }

    private async Task CreateRepositoryAsync(HubRepoId repo, bool isPrivate, CancellationToken cancellationToken)
    {
        using var request = Request(HttpMethod.Post, new Uri(_endpoint, "api/repos/create"));
        request.Content = JsonContent.Create(new { name = repo.Name, organization = repo.Org, @private = isPrivate, type = "model" });
        using var response = await _http.SendAsync(request, cancellationToken);
        if (response.StatusCode != HttpStatusCode.Conflict)
        {
            await EnsureSuccessAsync(response, repo.Id, "create the repository", cancellationToken);
        }
    }

    private async Task CreateBranchAsync(HubRepoId repo, string branch, CancellationToken cancellationToken)
    {
        using var request = Request(HttpMethod.Post, new Uri(_endpoint, $"api/models/{repo.Id}/branch/{Uri.EscapeDataString(branch)}"));
        request.Content = JsonContent.Create(new { });
        using var response = await _http.SendAsync(request, cancellationToken);
        if (response.StatusCode != HttpStatusCode.Conflict)
        {
            await EnsureSuccessAsync(response, repo.Id, $"create the branch '{branch}'", cancellationToken);
        }
    }

    private async Task UploadAsync(string repoId, LocalFile file, JsonElement upload, JsonElement? verify, CancellationToken cancellationToken)
    {
        var headers = upload.TryGetProperty("header", out var h) && h.ValueKind == JsonValueKind.Object
            ? h.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ToString(), StringComparer.OrdinalIgnoreCase)
            : [];
        if (headers.ContainsKey("chunk_size"))
        {
            throw new HubException($"The Hub asked for a multipart upload of '{file.Path}', which this client does not offer.", repoId, null, file.Path);
        }

        var href = new Uri(upload.GetProperty("href").GetString()!, UriKind.Absolute);
        LogUploading(_logger, repoId, file.Path, file.Size);
        await using (var stream = new FileStream(file.FullPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.Asynchronous | FileOptions.SequentialScan))
        {
            using var request = Request(HttpMethod.Put, href);
            request.Content = new StreamContent(stream, 1 << 20);
            request.Content.Headers.ContentLength = file.Size;
            foreach (var (name, value) in headers)
            {
                request.Headers.TryAddWithoutValidation(name, value);
            }

            using var response = await _http.SendAsync(request, cancellationToken);
            await EnsureSuccessAsync(response, repoId, $"upload '{file.Path}'", cancellationToken);
        }

        if (verify is { } v)
        {
            using var request = Request(HttpMethod.Post, new Uri(v.GetProperty("href").GetString()!, UriKind.Absolute));
            request.Content = JsonContent.Create(new { oid = file.Sha256, size = file.Size });
            if (v.TryGetProperty("header", out var vh) && vh.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in vh.EnumerateObject())
                {
                    request.Headers.TryAddWithoutValidation(p.Name, p.Value.ToString());
                }
            }

            using var response = await _http.SendAsync(request, cancellationToken);
            await EnsureSuccessAsync(response, repoId, $"verify the upload of '{file.Path}'", cancellationToken);
        }
    }

    private Task<JsonDocument?> SendJsonAsync(HttpMethod method, string relative, object body, string repoId, CancellationToken cancellationToken, string? mediaType = null)
    {
        var content = JsonContent.Create(body, mediaType: mediaType is null ? null : new MediaTypeHeaderValue(mediaType));
        return SendAsync(method, relative, content, repoId, cancellationToken, mediaType);
    }

    private async Task<JsonDocument?> SendAsync(HttpMethod method, string relative, HttpContent content, string repoId, CancellationToken cancellationToken, string? accept = null)
    {
        using var request = Request(method, new Uri(_endpoint, relative));
        request.Content = content;
        if (accept is not null)
        {
            request.Headers.Accept.ParseAdd(accept);
        }

        using var response = await _http.SendAsync(request, cancellationToken);
        await EnsureSuccessAsync(response, repoId, $"{method} {relative}", cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        return text.Length == 0 ? null : JsonDocument.Parse(text);
    }

    /// <summary>A request carrying the token only when it goes to the endpoint's own host.</summary>
    private HttpRequestMessage Request(HttpMethod method, Uri uri)
    {
        var request = new HttpRequestMessage(method, uri);
        if (Uri.Compare(uri, _endpoint, UriComponents.SchemeAndServer, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _options.Token);
        }

        return request;
    }

    private async Task EnsureSuccessAsync(HttpResponseMessage response, string repoId, string what, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        var message = response.Headers.TryGetValues("X-Error-Message", out var values) ? values.FirstOrDefault() : null;
        if (message is null)
        {
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            try
            {
                using var doc = JsonDocument.Parse(body);
                message = doc.RootElement.TryGetProperty("error", out var e) ? e.ToString() : body;
            }
            catch (JsonException)
            {
                message = body.Length > 300 ? body[..300] : body;
            }
        }

        if (_options.Token is { Length: > 0 } token)
        {
            message = message.Replace(token, "***", StringComparison.Ordinal);
        }

        var status = ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture);
        throw new HubException($"The Hub refused to {what} in '{repoId}' ({status}): {message}", repoId);
    }

    private static async Task<byte[]> SampleAsync(string path, CancellationToken cancellationToken)
    {
        await using var stream = File.OpenRead(path);
        var buffer = new byte[Math.Min(512, stream.Length)];
        await stream.ReadExactlyAsync(buffer, cancellationToken);
        return buffer;
    }

    private sealed record LocalFile(string FullPath, string Path, long Size, string Sha256, string GitSha1);

    [LoggerMessage(EventId = 7101, Level = LogLevel.Information, Message = "push {RepoId}: uploading {Path} ({Size} bytes)")]
    private static partial void LogUploading(ILogger logger, string repoId, string path, long size);

    [LoggerMessage(EventId = 7102, Level = LogLevel.Information, Message = "push {RepoId}: {Path} ({Size} bytes) is already on the Hub")]
    private static partial void LogLfsSkipped(ILogger logger, string repoId, string path, long size);

    [LoggerMessage(EventId = 7103, Level = LogLevel.Information, Message = "push {RepoId}@{Branch} -> {Commit}: {Uploaded} LFS objects ({Bytes} bytes) uploaded, {Skipped} already there")]
    private static partial void LogPushed(ILogger logger, string repoId, string branch, string commit, int uploaded, long bytes, int skipped);
}
