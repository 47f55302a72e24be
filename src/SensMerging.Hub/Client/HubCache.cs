using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SensMerging.Hub.Client;

/// <summary>
/// The cache shared with the official clients ({cache}/models--org--name/{blobs,snapshots,refs,.no_exist} and
/// {cache}/.locks) and pulls into it: resolve a revision to its commit, list and filter files, download missing
/// blobs through resumable .incomplete files verified against their etag, link them into the snapshot.
/// </summary>
public sealed partial class HubCache
{
    private readonly HubClient _client;
    private readonly HubOptions _options;
    private readonly ILogger<HubCache> _logger;
    private readonly HubCacheLayout _layout;
    private readonly BlobDownloader _blobs;

    /// <summary>Creates a cache over a client; the cache folder and offline flag come from the client's options.</summary>
    public HubCache(HubClient client, ILogger<HubCache>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        _client = client;
        _options = client.Options;
        _logger = logger ?? NullLogger<HubCache>.Instance;
        _layout = new HubCacheLayout(_options.CacheDirectory, _logger);
        _blobs = new BlobDownloader(client, _options, _layout, _logger);
    }

    /// <summary>The cache root.</summary>
    public string CacheDirectory => _options.CacheDirectory;

    /// <summary>{cache}/models--org--name.</summary>
    public string GetRepoDirectory(string repoId) => Path.Combine(CacheDirectory, HubRepoId.Parse(repoId).CacheFolderName);

    /// <summary>
    /// Pulls what is missing of a revision and returns the local snapshot pinned to its commit (with per-file sha256).
    /// Accepts "org/name" plus a revision, or "org/name@rev" with a null revision.
    /// </summary>
    public Task<PulledSnapshot> EnsureSnapshotAsync(string repoId, string? revision, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(repoId);
        if (revision is null && repoId.IndexOf('@', StringComparison.Ordinal) is var at and > 0)
        {
            return PullAsync(repoId[..at], repoId[(at + 1)..], cancellationToken: cancellationToken);
        }

        return PullAsync(repoId, revision, cancellationToken: cancellationToken);
    }

    /// <summary>
    /// Pulls a revision (branch, tag or commit; default "main") of a repository into the cache. Files are listed with
    /// the tree API (paged), filtered by fnmatch-like include/exclude patterns and downloaded several at once.
    /// </summary>
    public async Task<PulledSnapshot> PullAsync(
        string repoId, string? revision = null, IReadOnlyList<string>? include = null, IReadOnlyList<string>? exclude = null,
        IProgress<HubPullProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        revision = string.IsNullOrWhiteSpace(revision) ? "main" : revision;
        HubPaths.EnsureSafe(repo.Id, revision, revision);
        var includeGlobs = (include ?? []).Select(p => new HubGlob(p)).ToArray();
        var excludeGlobs = (exclude ?? []).Select(p => new HubGlob(p)).ToArray();

        if (_options.Offline)
        {
            return await ResolveFromCacheAsync(repo, revision, includeGlobs, excludeGlobs, cancellationToken);
        }

        bool pinned = HubHashing.IsSha1Hex(revision);
        if (pinned && includeGlobs.Length > 0 && includeGlobs.All(g => g.IsLiteral))
        {
            PulledSnapshot? cached;
            try
            {
                cached = await TryResolveFromCacheAsync(repo, revision, includeGlobs, excludeGlobs, cancellationToken);
            }
            catch (HubEntryNotFoundException)
            {
                cached = null; // A pull skips files that do not exist; the listing below decides.
            }

            if (cached is not null)
            {
                LogPinnedHit(_logger, repo.Id, revision);
                return cached;
            }
        }

        HubModelInfo info;
        try
        {
            info = await _client.GetModelInfoAsync(repo.Id, revision, cancellationToken);
        }
        catch (HubException ex) when (ex is HubServerUnreachableException or HubTimeoutException && pinned && Directory.Exists(_layout.SnapshotDirectory(repo, revision)))
        {
            LogFallbackToCache(_logger, repo.Id, revision, ex.Message);
            return await ResolveFromCacheAsync(repo, revision, includeGlobs, excludeGlobs, cancellationToken);
        }

        var commit = info.Sha;
        if (!HubHashing.IsSha1Hex(commit))
        {
            throw new HubException($"The Hub resolved revision '{revision}' of '{repo.Id}' to '{commit}', which is not a 40-hex commit id.", repo.Id, revision);
        }

        commit = commit.ToLowerInvariant();
        var tree = await _client.ListTreeAsync(repo.Id, commit, null, true, cancellationToken);
        var files = tree.Where(e => e.IsFile).ToList();
        foreach (var file in files)
        {
            HubPaths.EnsureSafe(repo.Id, commit, file.Path);
        }

        var selected = files.Where(f => HubGlob.Filter(f.Path, includeGlobs, excludeGlobs)).ToList();
        var repoDir = _layout.RepoDirectory(repo);
        Directory.CreateDirectory(Path.Combine(repoDir, "refs"));
        Directory.CreateDirectory(Path.Combine(repoDir, "blobs"));
        var snapshotDir = _layout.SnapshotDirectory(repo, commit);
        Directory.CreateDirectory(snapshotDir);

        foreach (var literal in includeGlobs.Where(g => g.IsLiteral && !files.Any(f => f.Path == g.Pattern)))
        {
            if (HubPaths.WhyUnsafe(literal.Pattern) is null)
            {
                _layout.WriteNoExistMarker(repo, commit, literal.Pattern);
            }
        }

        // Entries without an oid get their etag from a HEAD request.
        var resolved = new List<(HubTreeEntry Entry, string Etag)>(selected.Count);
        foreach (var entry in selected)
        {
            var etag = entry.Etag;
            if (string.IsNullOrEmpty(etag))
            {
                var meta = await _client.GetFileMetadataAsync(repo.Id, commit, entry.Path, cancellationToken);
                etag = meta.Etag ?? throw new HubException($"The Hub gave no etag for '{entry.Path}' of '{repo.Id}' at '{commit}'.", repo.Id, commit, entry.Path);
            }

            HubCacheLayout.EnsureSafeEtag(repo, commit, entry.Path, etag);
            resolved.Add((entry, etag));
        }

        var state = new PullProgress(resolved.Sum(r => r.Entry.Size), progress);
        var blobs = new ConcurrentDictionary<string, BlobResult>(StringComparer.Ordinal);
        var groups = resolved.GroupBy(r => r.Etag, StringComparer.Ordinal)
            .Select(g => g.First())
            .OrderByDescending(r => r.Entry.Size)
            .ToList();
        var stopwatch = Stopwatch.StartNew();
        await Parallel.ForEachAsync(groups,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, _options.MaxParallelDownloads), CancellationToken = cancellationToken },
            async (item, ct) =>
            {
                blobs[item.Etag] = await _blobs.EnsureAsync(repo, commit, item.Entry.Path, item.Etag, item.Entry.Size, state, ct);
            });

        var pulled = new List<PulledFile>(resolved.Count);
        foreach (var (entry, etag) in resolved)
        {
            var link = _layout.LinkSnapshotFile(repo, commit, entry.Path, etag);
            pulled.Add(new PulledFile(entry.Path, entry.Size, etag, blobs[etag].Sha256, link));
        }

        if (!string.Equals(revision, commit, StringComparison.OrdinalIgnoreCase))
        {
            _layout.WriteRef(repo, revision, commit);
        }

        LogPulled(_logger, repo.Id, revision, commit, pulled.Count, state.FilesDownloaded, state.BytesDownloaded, stopwatch.Elapsed.TotalSeconds);
        return new PulledSnapshot(repo.Id, revision, commit, snapshotDir, pulled, state.BytesDownloaded, state.FilesDownloaded, false);
    }

    /// <summary>
    /// Downloads one file (like hf_hub_download): HEAD for commit and etag, blob download if missing, snapshot link.
    /// A 404 EntryNotFound leaves a .no_exist marker and throws <see cref="HubEntryNotFoundException"/>.
    /// Returns the file's path in the snapshot.
    /// </summary>
    public async Task<PulledFile> DownloadFileAsync(string repoId, string path, string? revision = null, CancellationToken cancellationToken = default)
    {
        var repo = HubRepoId.Parse(repoId);
        revision = string.IsNullOrWhiteSpace(revision) ? "main" : revision;
        HubPaths.EnsureSafe(repo.Id, revision, revision);
        HubPaths.EnsureSafe(repo.Id, revision, path);
        var literal = new[] { new HubGlob(path) };
        if (_options.Offline || HubHashing.IsSha1Hex(revision))
        {
            var cached = _options.Offline
                ? await ResolveFromCacheAsync(repo, revision, literal, [], cancellationToken)
                : await TryResolveFromCacheAsync(repo, revision, literal, [], cancellationToken);
            if (cached is not null)
            {
                return cached.Files.Single();
            }
        }

        HubFileMetadata meta;
        try
        {
            meta = await _client.GetFileMetadataAsync(repo.Id, revision, path, cancellationToken);
        }
        catch (HubEntryNotFoundException ex)
        {
            var commitForMarker = ex.Commit ?? (HubHashing.IsSha1Hex(revision) ? revision : null);
            if (commitForMarker is not null && HubHashing.IsSha1Hex(commitForMarker))
            {
                _layout.WriteNoExistMarker(repo, commitForMarker.ToLowerInvariant(), path);
                if (!string.Equals(revision, commitForMarker, StringComparison.OrdinalIgnoreCase))
                {
                    _layout.WriteRef(repo, revision, commitForMarker.ToLowerInvariant());
                }
            }

            throw;
        }

        var commit = meta.Commit is { } c && HubHashing.IsSha1Hex(c) ? c.ToLowerInvariant()
            : throw new HubException($"The Hub sent no valid X-Repo-Commit for '{path}' of '{repo.Id}' at '{revision}'.", repo.Id, revision, path);
        var etag = meta.Etag ?? throw new HubException($"The Hub sent no ETag for '{path}' of '{repo.Id}' at '{revision}'.", repo.Id, revision, path);
        var size = meta.Size ?? throw new HubException($"The Hub sent no size for '{path}' of '{repo.Id}' at '{revision}'.", repo.Id, revision, path);
        HubCacheLayout.EnsureSafeEtag(repo, commit, path, etag);
        Directory.CreateDirectory(Path.Combine(GetRepoDirectory(repo.Id), "refs"));
        var state = new PullProgress(size, null);
        var blob = await _blobs.EnsureAsync(repo, commit, path, etag, size, state, cancellationToken);
        var link = _layout.LinkSnapshotFile(repo, commit, path, etag);
        if (!string.Equals(revision, commit, StringComparison.OrdinalIgnoreCase))
        {
            _layout.WriteRef(repo, revision, commit);
        }

        return new PulledFile(path, size, etag, blob.Sha256, link);
    }

    /// <summary>Repositories in the cache with their revisions (refs and commits) and sizes, for "hub ls".</summary>
    public IReadOnlyList<CachedRepo> ListCached()
    {
        var result = new List<CachedRepo>();
        if (!Directory.Exists(CacheDirectory))
        {
            return result;
        }

        foreach (var dir in Directory.EnumerateDirectories(CacheDirectory).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(dir);
            var sep = name.IndexOf("--", StringComparison.Ordinal);
            if (sep <= 0 || name.StartsWith('.'))
            {
                continue;
            }

            var type = name[..sep] switch { "models" => "model", "datasets" => "dataset", "spaces" => "space", var t => t };
            var repoId = name[(sep + 2)..].Replace("--", "/", StringComparison.Ordinal);
            var blobsDir = Path.Combine(dir, "blobs");
            long sizeOnDisk = 0;
            var lastModified = Directory.GetLastWriteTimeUtc(dir);
            if (Directory.Exists(blobsDir))
            {
                foreach (var blob in new DirectoryInfo(blobsDir).EnumerateFiles())
                {
                    sizeOnDisk += blob.Length;
                    if (blob.LastWriteTimeUtc > lastModified)
                    {
                        lastModified = blob.LastWriteTimeUtc;
                    }
                }
            }

            var refsByCommit = new Dictionary<string, List<string>>(StringComparer.Ordinal);
            var refsDir = Path.Combine(dir, "refs");
            if (Directory.Exists(refsDir))
            {
                foreach (var refFile in Directory.EnumerateFiles(refsDir, "*", SearchOption.AllDirectories))
                {
                    var refName = Path.GetRelativePath(refsDir, refFile).Replace(Path.DirectorySeparatorChar, '/');
                    var commit = HubCacheLayout.ReadRefFile(refFile);
                    if (commit is not null)
                    {
                        if (!refsByCommit.TryGetValue(commit, out var list))
                        {
                            refsByCommit[commit] = list = [];
                        }

                        list.Add(refName);
                    }
                }
            }

            var revisions = new List<CachedRevision>();
            var snapshotsDir = Path.Combine(dir, "snapshots");
            if (Directory.Exists(snapshotsDir))
            {
                foreach (var snap in Directory.EnumerateDirectories(snapshotsDir).Order(StringComparer.Ordinal))
                {
                    var commit = Path.GetFileName(snap);
                    int count = 0;
                    long size = 0;
                    foreach (var file in Directory.EnumerateFiles(snap, "*", SearchOption.AllDirectories))
                    {
                        count++;
                        var target = HubCacheLayout.ResolveLinkTarget(file);
                        if (target is not null && File.Exists(target))
                        {
                            size += new FileInfo(target).Length;
                        }
                    }

                    revisions.Add(new CachedRevision(commit, refsByCommit.TryGetValue(commit, out var refs) ? [.. refs.Order(StringComparer.Ordinal)] : [], count, size, snap));
                }
            }

            result.Add(new CachedRepo(repoId, type, dir, sizeOnDisk, lastModified, revisions));
        }

        return result;
    }

    private async Task<PulledSnapshot> ResolveFromCacheAsync(
        HubRepoId repo, string revision, IReadOnlyList<HubGlob> include, IReadOnlyList<HubGlob> exclude, CancellationToken cancellationToken)
    {
        var (snapshot, miss) = await ResolveCachedAsync(repo, revision, include, exclude, cancellationToken);
        return snapshot ?? throw miss!;
    }

    /// <summary>The cached snapshot, or null when something is missing; throws when the cache knows a file does not exist.</summary>
    private async Task<PulledSnapshot?> TryResolveFromCacheAsync(
        HubRepoId repo, string revision, IReadOnlyList<HubGlob> include, IReadOnlyList<HubGlob> exclude, CancellationToken cancellationToken)
    {
        var (snapshot, miss) = await ResolveCachedAsync(repo, revision, include, exclude, cancellationToken);
        return miss is HubEntryNotFoundException notFound ? throw notFound : snapshot;
    }

    private async Task<(PulledSnapshot? Snapshot, HubException? Miss)> ResolveCachedAsync(
        HubRepoId repo, string revision, IReadOnlyList<HubGlob> include, IReadOnlyList<HubGlob> exclude, CancellationToken cancellationToken)
    {
        var repoDir = _layout.RepoDirectory(repo);
        HubOfflineCacheMissException Miss(string detail, IReadOnlyList<string>? missing = null) =>
            new(repo.Id, revision, CacheDirectory, missing ?? [], detail);

        if (!Directory.Exists(repoDir))
        {
            return (null, Miss($"the repository has never been pulled (no folder '{repoDir}')."));
        }

        string? commit = null;
        if (HubHashing.IsSha1Hex(revision)
            && (Directory.Exists(_layout.SnapshotDirectory(repo, revision.ToLowerInvariant())) || Directory.Exists(Path.Combine(repoDir, ".no_exist", revision.ToLowerInvariant()))))
        {
            commit = revision.ToLowerInvariant();
        }
        else
        {
            var refFile = HubPaths.Combine(Path.Combine(repoDir, "refs"), repo.Id, revision, revision);
            commit = File.Exists(refFile) ? HubCacheLayout.ReadRefFile(refFile) : null;
            if (commit is null)
            {
                return (null, Miss($"no ref '{revision}' and no snapshot of that name."));
            }
        }

        var snapshotDir = _layout.SnapshotDirectory(repo, commit);
        var noExistDir = Path.Combine(repoDir, ".no_exist", commit);
        foreach (var literal in include.Where(g => g.IsLiteral && HubPaths.WhyUnsafe(g.Pattern) is null))
        {
            if (File.Exists(HubPaths.Combine(noExistDir, repo.Id, commit, literal.Pattern)) && !File.Exists(Path.Combine(snapshotDir, literal.Pattern)))
            {
                return (null, new HubEntryNotFoundException(repo.Id, revision, literal.Pattern, "known missing (.no_exist marker in the cache)") { Commit = commit });
            }
        }

        if (!Directory.Exists(snapshotDir))
        {
            return (null, Miss($"revision '{revision}' is commit {commit}, whose snapshot folder is missing."));
        }

        var files = new List<PulledFile>();
        var missing = new List<string>();
        var present = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in Directory.EnumerateFiles(snapshotDir, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(snapshotDir, file).Replace(Path.DirectorySeparatorChar, '/');
            if (!HubGlob.Filter(rel, include, exclude))
            {
                continue;
            }

            present.Add(rel);
            var target = HubCacheLayout.ResolveLinkTarget(file);
            if (target is null || !File.Exists(target))
            {
                missing.Add(rel);
                continue;
            }

            var etag = Path.GetFileName(target);
            var info = new FileInfo(target);
            string? sha256 = HubHashing.IsSha256Hex(etag) ? etag.ToLowerInvariant() : null;
            if (_options.VerifyExistingBlobs || sha256 is null)
            {
                var check = await _blobs.VerifyCachedBlobAsync(repo, target, etag, info.Length, cancellationToken);
                if (_options.VerifyExistingBlobs && !check.Ok)
                {
                    BlobDownloader.LogCorruptBlob(_logger, repo.Id, rel, etag);
                    missing.Add(rel + " (corrupted blob)");
                    continue;
                }

                sha256 = check.Sha256;
            }

            files.Add(new PulledFile(rel, info.Length, etag, sha256, file));
        }

        missing.AddRange(include.Where(g => g.IsLiteral && !present.Contains(g.Pattern)).Select(g => g.Pattern));

        if (missing.Count > 0)
        {
            return (null, Miss($"{missing.Count} file(s) of commit {commit} are not cached.", missing));
        }

        if (files.Count == 0)
        {
            return (null, Miss($"no cached file of commit {commit} matches the include/exclude patterns."));
        }

        files.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return (new PulledSnapshot(repo.Id, revision, commit, snapshotDir, files, 0, 0, true), null);
    }

    [LoggerMessage(EventId = 5201, Level = LogLevel.Information, Message = "Pulled {RepoId}@{Revision} -> {Commit}: {Files} file(s), {Downloaded} downloaded, {Bytes} bytes in {Seconds:F2} s")]
    private static partial void LogPulled(ILogger logger, string repoId, string revision, string commit, int files, int downloaded, long bytes, double seconds);

    [LoggerMessage(EventId = 5202, Level = LogLevel.Debug, Message = "{RepoId}@{Commit}: pinned commit already cached, no request made")]
    private static partial void LogPinnedHit(ILogger logger, string repoId, string commit);

    [LoggerMessage(EventId = 5203, Level = LogLevel.Warning, Message = "{RepoId}@{Commit}: Hub unreachable ({Error}); using the cached snapshot")]
    private static partial void LogFallbackToCache(ILogger logger, string repoId, string commit, string error);
}
