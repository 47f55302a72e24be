using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace SensMerging.Hub.Server;

/// <summary>
/// Serves DIR/org/name/ folders as repositories. The commit id is the sha1 over the sorted (path, etag) pairs, so
/// it changes exactly when the content does. File hashes are cached by (path, size, mtime). A file
/// ".hub-token" (tokens, one per line) makes a repository private; ".hub-gated" (granted tokens, one per line, may be
/// empty) makes it gated. Marker files and ".git" folders are not served. "main" and "HEAD" resolve to the commit.
/// What a repository folder serves is decided by <see cref="RepositoryFileResolver"/>: regular files whose real path
/// lies inside the repository (or inside the cache's blobs/ for a Hub-cache snapshot), with their real sizes and
/// hashes; a repository folder that is a link out of the root is not served unless it is a Hub-cache snapshot.
/// </summary>
public sealed class FolderRepositorySource : IHubRepositorySource
{
    /// <summary>Marker file making a repository private; lists the accepted tokens.</summary>
    public const string PrivateMarker = ".hub-token";

    /// <summary>Marker file making a repository gated; lists the granted tokens.</summary>
    public const string GatedMarker = ".hub-gated";

    private readonly ConcurrentDictionary<(string Path, long Size, long Ticks), Lazy<Task<(string Sha256, string? GitSha1)>>> _hashes = new();
    private readonly long _lfsThreshold;

    /// <summary>Serves the repositories under <paramref name="root"/>.</summary>
    public FolderRepositorySource(string root, long lfsThresholdBytes = 10 * 1024 * 1024)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = RepositoryFileResolver.RealPath(root) is { } real && Directory.Exists(real)
            ? real
            : throw new DirectoryNotFoundException($"Repository folder '{Path.GetFullPath(root)}' does not exist.");

        _lfsThreshold = lfsThresholdBytes;
    }

    /// <summary>The folder holding org/name repositories (its real path).</summary>
    public string Root { get; }

    /// <summary>Extensions always stored through LFS.</summary>
    public static IReadOnlySet<string> LfsExtensions { get; } = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack", ".ckpt",
    };

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<string>> ListRepositoriesAsync(CancellationToken cancellationToken)
    {
        var repos = new List<string>();
        foreach (var org in Directory.EnumerateDirectories(Root))
        {
            foreach (var repo in Directory.EnumerateDirectories(org))
            {
                var id = $"{Path.GetFileName(org)}/{Path.GetFileName(repo)}";
                if (HubRepoId.TryParse(id, out _) && RepositoryFileResolver.TryCreate(repo, Root) is not null)
                {
                    repos.Add(id);
                }
            }
        }

        repos.Sort(StringComparer.Ordinal);
        return ValueTask.FromResult<IReadOnlyList<string>>(repos);
    }

    /// <inheritdoc />
    public async ValueTask<HubRevisionLookup> GetRevisionAsync(string repoId, string revision, CancellationToken cancellationToken)
    {
        if (!HubRepoId.TryParse(repoId, out var id) || id!.Org is null)
        {
            return HubRevisionLookup.RepositoryNotFound;
        }

        if (RepositoryFileResolver.TryCreate(Path.Combine(Root, id.Org, id.Name), Root) is not { } resolver)
        {
            return HubRevisionLookup.RepositoryNotFound;
        }

        var snapshot = await BuildSnapshotAsync(id.Id, resolver, cancellationToken);
        return revision is "main" or "HEAD" || string.Equals(revision, snapshot.Commit, StringComparison.OrdinalIgnoreCase)
            ? HubRevisionLookup.Found(snapshot)
            : HubRevisionLookup.RevisionNotFound;
    }

    /// <summary>
    /// Describes any folder as a repository snapshot (same hashing, hash cache, LFS rule, markers and commit id as the
    /// repositories under <see cref="Root"/>); used to serve folders that live elsewhere, e.g. merge outputs.
    /// </summary>
    public Task<HubRepositorySnapshot> SnapshotFolderAsync(string repoId, string folder, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(repoId);
        ArgumentException.ThrowIfNullOrEmpty(folder);
        var resolver = RepositoryFileResolver.TryCreate(folder)
            ?? throw new DirectoryNotFoundException($"Folder '{Path.GetFullPath(folder)}' of repository '{repoId}' does not exist.");
        return BuildSnapshotAsync(repoId, resolver, cancellationToken);
    }

    private async Task<HubRepositorySnapshot> BuildSnapshotAsync(string repoId, RepositoryFileResolver resolver, CancellationToken cancellationToken)
    {
        var dir = resolver.Root;
        var entries = resolver.Enumerate(static name => name is PrivateMarker or GatedMarker).Select(f => (Rel: f.Path, Info: f.File)).ToList();
        // Hash files not seen before on all cores; later requests find them in the cache.
        var hashes = new (string Sha256, string? GitSha1)[entries.Count];
        await Parallel.ForAsync(0, entries.Count,
            new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellationToken },
            async (i, ct) => hashes[i] = await HashAsync(entries[i].Info, ct));
        var files = new List<HubRepositoryFile>(entries.Count);
        var lastModified = DateTime.MinValue;
        for (int i = 0; i < entries.Count; i++)
        {
            var (rel, info) = entries[i];
            // The repository path names the type: a cache blob behind a snapshot link has no extension of its own.
            bool lfs = info.Length >= _lfsThreshold || LfsExtensions.Contains(Path.GetExtension(rel));
            var (sha256, gitSha1) = hashes[i];
            var oid = lfs ? HubHashing.GitBlobSha1(Encoding.ASCII.GetBytes(HubHashing.LfsPointerText(sha256, info.Length))) : gitSha1!;
            files.Add(new HubRepositoryFile(rel, info.Length, oid, sha256, lfs, info.FullName));
            if (info.LastWriteTimeUtc > lastModified)
            {
                lastModified = info.LastWriteTimeUtc;
            }
        }

        var access = ReadAccess(dir);
        return new HubRepositorySnapshot(repoId, ComputeCommit(files), lastModified == DateTime.MinValue
            ? new DateTimeOffset(Directory.GetLastWriteTimeUtc(dir)) : new DateTimeOffset(lastModified), files, access);
    }

    /// <summary>The commit id of a file list: sha1 over "path\0etag\n" lines in ordinal path order.</summary>
    public static string ComputeCommit(IEnumerable<HubRepositoryFile> files)
    {
        ArgumentNullException.ThrowIfNull(files);
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        foreach (var f in files.OrderBy(f => f.Path, StringComparer.Ordinal))
        {
            sha1.AppendData(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{f.Path}\0{f.Etag}\n")));
        }

        return HubHashing.ToHex(sha1.GetHashAndReset());
    }

    private Task<(string Sha256, string? GitSha1)> HashAsync(FileInfo info, CancellationToken cancellationToken)
    {
        if (info.Length == 0)
        {
            // Never opened: FIFOs, sockets and device nodes report size 0 too, and opening a FIFO waits for a writer.
            return Task.FromResult<(string, string?)>((HubHashing.ToHex(SHA256.HashData([])), HubHashing.GitBlobSha1([])));
        }

        var key = (info.FullName, info.Length, info.LastWriteTimeUtc.Ticks);
        var lazy = _hashes.GetOrAdd(key, k => new Lazy<Task<(string, string?)>>(async () =>
        {
            // Both hashes for every file keeps the cache entry valid whichever way the file is classified.
            var (sha256, gitSha1, _) = await HubHashing.HashFileAsync(k.Path, true, 4 * 1024 * 1024, CancellationToken.None);
            return (sha256, gitSha1);
        }));
        return lazy.Value.WaitAsync(cancellationToken);
    }

    private static HubRepositoryAccess ReadAccess(string dir)
    {
        var privateFile = Path.Combine(dir, PrivateMarker);
        var gatedFile = Path.Combine(dir, GatedMarker);
        bool isPrivate = File.Exists(privateFile);
        bool gated = File.Exists(gatedFile);
        if (!isPrivate && !gated)
        {
            return HubRepositoryAccess.Public;
        }

        static HashSet<string> Tokens(string path) => File.Exists(path)
            ? [.. File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0)]
            : [];
        return new HubRepositoryAccess(isPrivate, Tokens(privateFile), gated, Tokens(gatedFile));
    }
}
