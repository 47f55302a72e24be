using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SensMerging.Hub.Server.Store;

/// <summary>
/// The repositories pushed to <c>serve</c>, stored by content. Layout under the root:
/// <c>objects/ab/abcd…</c> one file per distinct content, named by its SHA-256 (stored once however many files,
/// commits and repositories use it); <c>repos/org/name/repo.json</c> (settings), <c>refs.json</c> (branch → commit) and
/// <c>commits/{sha1}.json</c> (parents, message, author, time and the whole tree); <c>tmp/</c> for writes in progress.
/// Every file is written under a temporary name, flushed to disk and renamed into place (a new repository's folder is
/// built in <c>tmp/</c> and renamed as a whole), blobs are checked against their SHA-256 and size before they are named,
/// and a branch moves only after its commit is on disk: after a crash or a killed upload nothing half-written is
/// visible (left-over temporary files are removed when the store opens). Commits to one repository are serialised.
/// </summary>
public sealed partial class HubRepositoryStore
{
    /// <summary>The branch every repository starts with.</summary>
    public const string DefaultBranch = "main";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _locks = new(StringComparer.Ordinal);
    private readonly ILogger _logger;

    /// <summary>Opens (creating when absent) the store at <paramref name="root"/> and removes left-over temporary files.</summary>
    public HubRepositoryStore(string root, ILogger<HubRepositoryStore>? logger = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        Directory.CreateDirectory(root);
        Root = RepositoryFileResolver.RealPath(root) ?? throw new DirectoryNotFoundException($"Hub store folder '{Path.GetFullPath(root)}' cannot be opened.");
        ObjectsFolder = Directory.CreateDirectory(Path.Combine(Root, "objects")).FullName;
        ReposFolder = Directory.CreateDirectory(Path.Combine(Root, "repos")).FullName;
        TempFolder = Directory.CreateDirectory(Path.Combine(Root, "tmp")).FullName;
        int leftOver = 0;
        foreach (var entry in Directory.EnumerateFileSystemEntries(TempFolder))
        {
            DurableFiles.TryDelete(entry);
            leftOver++;
        }

        if (leftOver > 0)
        {
            LogTempRemoved(_logger, leftOver, TempFolder);
        }
    }

    /// <summary>The store's real root folder.</summary>
    public string Root { get; }

    /// <summary>Where blobs live.</summary>
    public string ObjectsFolder { get; }

    /// <summary>Where repositories live.</summary>
    public string ReposFolder { get; }

    /// <summary>Where writes in progress live (same file system as the rest, so renames are atomic).</summary>
    public string TempFolder { get; }

    /// <summary>The path of the blob with this SHA-256 (whether or not it exists).</summary>
    public string BlobPath(string sha256)
    {
        if (!HubHashing.IsSha256Hex(sha256))
        {
            throw new HubStoreException(HubStoreErrorKind.BadRequest, $"'{sha256}' is not a SHA-256 (64 hex digits).");
        }

        var lower = sha256.ToLowerInvariant();
        return Path.Combine(ObjectsFolder, lower[..2], lower);
    }

    /// <summary>True when the blob is stored with this size.</summary>
    public bool HasBlob(string sha256, long size)
    {
        var info = new FileInfo(BlobPath(sha256));
        return info.Exists && info.Length == size;
    }

    /// <summary>
    /// Stores the bytes of <paramref name="content"/> as a blob: written to a temporary file while hashing, refused
    /// (and removed) when the SHA-256 or size differs from the expected ones, flushed and renamed into place.
    /// Returns the SHA-256 and size.
    /// </summary>
    public async Task<(string Sha256, long Size)> WriteBlobAsync(Stream content, string? expectedSha256, long? expectedSize, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(content);
        var temp = DurableFiles.NewTempPath(TempFolder);
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            using var sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            long total = 0;
            await using (var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous))
            {
                int read;
                while ((read = await content.ReadAsync(buffer.AsMemory(0, 1 << 20), cancellationToken)) > 0)
                {
                    total += read;
                    if (expectedSize is { } limit && total > limit)
                    {
                        throw new HubStoreException(HubStoreErrorKind.HashMismatch,
                            string.Create(CultureInfo.InvariantCulture, $"The upload is larger than the announced {limit} bytes."));
                    }

                    sha256.AppendData(buffer, 0, read);
                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                }

                output.Flush(flushToDisk: true);
            }

            var actual = HubHashing.ToHex(sha256.GetHashAndReset());
            if (expectedSize is { } size && total != size)
            {
                throw new HubStoreException(HubStoreErrorKind.HashMismatch,
                    string.Create(CultureInfo.InvariantCulture, $"The upload has {total} bytes, {size} were announced."));
            }

            if (expectedSha256 is not null && !string.Equals(actual, expectedSha256, StringComparison.OrdinalIgnoreCase))
            {
                LogHashMismatch(_logger, expectedSha256, actual, total);
                throw new HubStoreException(HubStoreErrorKind.HashMismatch,
                    $"The uploaded bytes hash to sha256 {actual}, not to the announced oid {expectedSha256.ToLowerInvariant()}; nothing was stored.");
            }

            var target = BlobPath(actual);
            if (new FileInfo(target) is { Exists: true } existing && existing.Length == total)
            {
                File.Delete(temp); // already stored once
            }
            else
            {
                DurableFiles.MoveIntoPlace(temp, target, overwrite: true);
                LogBlobStored(_logger, actual, total);
            }

            return (actual, total);
        }
        catch
        {
            DurableFiles.TryDelete(temp);
            throw;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Every stored repository id, in ordinal order.</summary>
    public IReadOnlyList<string> ListRepositories()
    {
        var ids = new List<string>();
        foreach (var org in Directory.EnumerateDirectories(ReposFolder))
        {
            foreach (var repo in Directory.EnumerateDirectories(org))
            {
                if (File.Exists(Path.Combine(repo, "repo.json")))
                {
                    ids.Add($"{Path.GetFileName(org)}/{Path.GetFileName(repo)}");
                }
            }
        }

        ids.Sort(StringComparer.Ordinal);
        return ids;
    }

    /// <summary>The repository's settings, or null when it is not stored here.</summary>
    public async Task<StoredRepositoryInfo?> GetRepositoryAsync(string repoId, CancellationToken cancellationToken)
    {
        var file = Path.Combine(RepoFolder(repoId), "repo.json");
        return File.Exists(file) ? await ReadJsonAsync<StoredRepositoryInfo>(file, cancellationToken) : null;
    }

    /// <summary>The branches and their head commits.</summary>
    public async Task<IReadOnlyDictionary<string, string>> GetBranchesAsync(string repoId, CancellationToken cancellationToken)
    {
        var refs = Path.Combine(RepoFolder(repoId), "refs.json");
        if (!File.Exists(refs))
        {
            throw new HubStoreException(HubStoreErrorKind.RepositoryNotFound, $"Repository '{repoId}' not found.");
        }

        return await ReadJsonAsync<SortedDictionary<string, string>>(refs, cancellationToken);
    }

    /// <summary>
    /// Resolves a branch name, <c>HEAD</c> (the default branch) or a full commit id of this repository to its commit;
    /// null when the repository has no such revision. Throws <see cref="HubStoreException"/> (RepositoryNotFound) for an
    /// unknown repository.
    /// </summary>
    public async Task<StoredCommit?> ResolveAsync(string repoId, string revision, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(revision);
        var branches = await GetBranchesAsync(repoId, cancellationToken);
        var name = revision == "HEAD" ? DefaultBranch : revision;
        string? commitId = branches.TryGetValue(name, out var head) ? head
            : HubHashing.IsSha1Hex(revision) ? revision.ToLowerInvariant() : null;
        if (commitId is null)
        {
            return null;
        }

        var file = CommitFile(repoId, commitId);
        return File.Exists(file) ? await ReadJsonAsync<StoredCommit>(file, cancellationToken) : null;
    }

    /// <summary>
    /// Creates a repository with an empty initial commit on <see cref="DefaultBranch"/>. The folder is built in
    /// <c>tmp/</c> and renamed into place, so a repository is either absent or whole. Throws Conflict when it exists.
    /// </summary>
    public async Task<StoredRepositoryInfo> CreateRepositoryAsync(string repoId, bool isPrivate, string? createdBy, CancellationToken cancellationToken)
    {
        var folder = RepoFolder(repoId);
        var gate = _locks.GetOrAdd(repoId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        var temp = DurableFiles.NewTempPath(TempFolder);
        try
        {
            if (Directory.Exists(folder))
            {
                throw new HubStoreException(HubStoreErrorKind.Conflict, $"You already created this model repo: '{repoId}'.");
            }

            var now = DateTimeOffset.UtcNow;
            var info = new StoredRepositoryInfo(repoId, isPrivate, now, createdBy);
            var initial = NewCommit([], "initial commit", null, createdBy, now, []);
            Directory.CreateDirectory(Path.Combine(temp, "commits"));
            await DurableFiles.WriteAllTextAsync(Path.Combine(temp, "repo.json"), JsonSerializer.Serialize(info, Json), TempFolder, cancellationToken);
            await DurableFiles.WriteAllTextAsync(Path.Combine(temp, "commits", initial.Id + ".json"), JsonSerializer.Serialize(initial, Json), TempFolder, cancellationToken);
            await DurableFiles.WriteAllTextAsync(Path.Combine(temp, "refs.json"),
                JsonSerializer.Serialize(new SortedDictionary<string, string>(StringComparer.Ordinal) { [DefaultBranch] = initial.Id }, Json), TempFolder, cancellationToken);
            DurableFiles.FlushFolder(Path.Combine(temp, "commits"));
            DurableFiles.FlushFolder(temp);
            DurableFiles.MoveIntoPlace(temp, folder, overwrite: false);
            LogRepositoryCreated(_logger, repoId, isPrivate, createdBy ?? "-");
            return info;
        }
        catch
        {
            DurableFiles.TryDelete(temp);
            throw;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// Applies <paramref name="request"/> to the head of <paramref name="branch"/> and moves the branch to the new commit.
    /// Every added file's blob must be stored with its size (LfsObjectMissing otherwise); with a parent commit the branch
    /// must still point at it (ParentMismatch otherwise).
    /// </summary>
    public async Task<StoredCommit> CommitAsync(string repoId, string branch, CommitRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var gate = _locks.GetOrAdd(repoId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var branches = new SortedDictionary<string, string>(
                (IDictionary<string, string>)await GetBranchesAsync(repoId, cancellationToken), StringComparer.Ordinal);
            if (!branches.TryGetValue(branch, out var head))
            {
                throw new HubStoreException(HubStoreErrorKind.RevisionNotFound, $"Invalid rev id: {branch} (no such branch in '{repoId}'; create it first).");
            }

            if (request.ParentCommit is { Length: > 0 } parent && !string.Equals(parent, head, StringComparison.OrdinalIgnoreCase))
            {
                throw new HubStoreException(HubStoreErrorKind.ParentMismatch,
                    $"The branch '{branch}' of '{repoId}' is at {head}, not at the parent commit {parent} this commit was made on.");
            }

            var headCommit = await ReadJsonAsync<StoredCommit>(CommitFile(repoId, head), cancellationToken);
            var files = headCommit.Files.ToDictionary(f => f.Path, StringComparer.Ordinal);
            foreach (var operation in request.Operations)
            {
                Apply(files, operation);
            }

            CheckTree(files.Keys);
            var commit = NewCommit([head], request.Title, request.Description, request.Author, DateTimeOffset.UtcNow,
                [.. files.Values.OrderBy(f => f.Path, StringComparer.Ordinal)]);
            await DurableFiles.WriteAllTextAsync(CommitFile(repoId, commit.Id), JsonSerializer.Serialize(commit, Json), TempFolder, cancellationToken);
            branches[branch] = commit.Id;
            await DurableFiles.WriteAllTextAsync(Path.Combine(RepoFolder(repoId), "refs.json"), JsonSerializer.Serialize(branches, Json), TempFolder, cancellationToken);
            LogCommitted(_logger, repoId, branch, commit.Id, request.Operations.Count, request.Author ?? "-");
            return commit;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Creates a branch at <paramref name="startingPoint"/> (a branch or commit; default: the default branch's head).</summary>
    public async Task<string> CreateBranchAsync(string repoId, string branch, string? startingPoint, CancellationToken cancellationToken)
    {
        CheckBranchName(branch);
        var gate = _locks.GetOrAdd(repoId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var branches = new SortedDictionary<string, string>(
                (IDictionary<string, string>)await GetBranchesAsync(repoId, cancellationToken), StringComparer.Ordinal);
            if (branches.ContainsKey(branch))
            {
                throw new HubStoreException(HubStoreErrorKind.Conflict, $"Reference already exists: branch '{branch}' of '{repoId}'.");
            }

            var start = await ResolveAsync(repoId, startingPoint ?? DefaultBranch, cancellationToken)
                ?? throw new HubStoreException(HubStoreErrorKind.RevisionNotFound, $"Invalid rev id: {startingPoint}");
            branches[branch] = start.Id;
            await DurableFiles.WriteAllTextAsync(Path.Combine(RepoFolder(repoId), "refs.json"), JsonSerializer.Serialize(branches, Json), TempFolder, cancellationToken);
            return start.Id;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Deletes a branch (never the default branch); its commits stay readable by id.</summary>
    public async Task DeleteBranchAsync(string repoId, string branch, CancellationToken cancellationToken)
    {
        if (branch == DefaultBranch)
        {
            throw new HubStoreException(HubStoreErrorKind.BadRequest, $"The default branch '{DefaultBranch}' cannot be deleted.");
        }

        var gate = _locks.GetOrAdd(repoId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var branches = new SortedDictionary<string, string>(
                (IDictionary<string, string>)await GetBranchesAsync(repoId, cancellationToken), StringComparer.Ordinal);
            if (!branches.Remove(branch))
            {
                throw new HubStoreException(HubStoreErrorKind.RevisionNotFound, $"Invalid rev id: {branch}");
            }

            await DurableFiles.WriteAllTextAsync(Path.Combine(RepoFolder(repoId), "refs.json"), JsonSerializer.Serialize(branches, Json), TempFolder, cancellationToken);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Checks a path inside a repository: relative, '/'-separated, no empty, '.', '..' or '.git' segment.</summary>
    public static string CheckPath(string? path)
    {
        if (string.IsNullOrEmpty(path) || path.Length > 1000 || path.StartsWith('/') || path.EndsWith('/')
            || path.Contains('\\', StringComparison.Ordinal) || path.Any(char.IsControl)
            || path.Split('/').Any(s => s is "" or "." or ".." or ".git"))
        {
            throw new HubStoreException(HubStoreErrorKind.BadRequest,
                $"Invalid path '{path}': a repository path is relative, '/'-separated, without empty, '.', '..' or '.git' segments.");
        }

        return path;
    }

    /// <summary>Checks a branch name: letters, digits, '.', '_', '-', '/' (not at the ends, no '..'), not a commit id.</summary>
    public static void CheckBranchName(string? branch)
    {
        if (string.IsNullOrEmpty(branch) || branch.Length > 200 || branch == "HEAD" || HubHashing.IsSha1Hex(branch)
            || branch.StartsWith('/') || branch.EndsWith('/') || branch.StartsWith('.') || branch.Contains("..", StringComparison.Ordinal)
            || branch.Contains("//", StringComparison.Ordinal)
            || !branch.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '/'))
        {
            throw new HubStoreException(HubStoreErrorKind.BadRequest,
                $"Invalid branch name '{branch}': use letters, digits, '.', '_', '-' and '/' (not 'HEAD' or a 40-digit commit id).");
        }
    }

    private void Apply(Dictionary<string, StoredFile> files, CommitOperation operation)
    {
        switch (operation)
        {
            case AddFileOperation add:
                CheckPath(add.Path);
                if (!HasBlob(add.Sha256, add.Size))
                {
                    throw new HubStoreException(HubStoreErrorKind.LfsObjectMissing, add.Lfs
                        ? string.Create(CultureInfo.InvariantCulture, $"LFS object {add.Sha256} ({add.Size} bytes) for '{add.Path}' was never uploaded (upload it through the LFS batch API first).")
                        : $"The content of '{add.Path}' is not stored.");
                }

                var oid = add.Lfs
                    ? HubHashing.GitBlobSha1(Encoding.ASCII.GetBytes(HubHashing.LfsPointerText(add.Sha256.ToLowerInvariant(), add.Size)))
                    : add.GitSha1 ?? throw new HubStoreException(HubStoreErrorKind.BadRequest, $"'{add.Path}' has no git blob id.");
                files[add.Path] = new StoredFile(add.Path, add.Size, add.Sha256.ToLowerInvariant(), oid, add.Lfs);
                break;
            case DeleteFileOperation delete:
                if (!files.Remove(CheckPath(delete.Path)))
                {
                    throw new HubStoreException(HubStoreErrorKind.BadRequest, $"Cannot delete '{delete.Path}': no such file at the branch head.");
                }

                break;
            case DeleteFolderOperation folder:
                var prefix = CheckPath(folder.Path.TrimEnd('/')) + "/";
                var gone = files.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList();
                if (gone.Count == 0)
                {
                    throw new HubStoreException(HubStoreErrorKind.BadRequest, $"Cannot delete folder '{folder.Path}': no files under it at the branch head.");
                }

                gone.ForEach(k => files.Remove(k));
                break;
            default:
                throw new HubStoreException(HubStoreErrorKind.BadRequest, $"Unknown operation on '{operation.Path}'.");
        }
    }

    private static void CheckTree(IEnumerable<string> paths)
    {
        var set = paths.ToHashSet(StringComparer.Ordinal);
        foreach (var path in set)
        {
            for (int i = path.IndexOf('/', StringComparison.Ordinal); i > 0; i = path.IndexOf('/', i + 1))
            {
                if (set.Contains(path[..i]))
                {
                    throw new HubStoreException(HubStoreErrorKind.BadRequest, $"'{path[..i]}' would be both a file and the folder of '{path}'.");
                }
            }
        }
    }

    private static StoredCommit NewCommit(IReadOnlyList<string> parents, string title, string? description, string? author, DateTimeOffset date, IReadOnlyList<StoredFile> files)
    {
        // The id covers everything the commit says, like a git commit id: same content and history, same id.
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        var text = new StringBuilder();
        foreach (var p in parents)
        {
            text.Append("parent ").Append(p).Append('\n');
        }

        text.Append(CultureInfo.InvariantCulture, $"author {author}\ndate {date.ToUnixTimeMilliseconds()}\ntitle {title}\ndescription {description}\n");
        foreach (var f in files)
        {
            text.Append(CultureInfo.InvariantCulture, $"{f.Path}\0{f.Sha256}\0{f.Size}\0{(f.Lfs ? 1 : 0)}\n");
        }

        sha1.AppendData(Encoding.UTF8.GetBytes(text.ToString()));
        return new StoredCommit(HubHashing.ToHex(sha1.GetHashAndReset()), parents, title, description, author, date, files);
    }

    private string RepoFolder(string repoId)
    {
        if (!HubRepoId.TryParse(repoId, out var id) || id!.Org is null)
        {
            throw new HubStoreException(HubStoreErrorKind.BadRequest, $"'{repoId}' is not a repository id of the form org/name.");
        }

        return Path.Combine(ReposFolder, id.Org, id.Name);
    }

    private string CommitFile(string repoId, string commitId) => Path.Combine(RepoFolder(repoId), "commits", commitId + ".json");

    private static async Task<T> ReadJsonAsync<T>(string path, CancellationToken cancellationToken)
    {
        await using var stream = File.OpenRead(path);
        return await JsonSerializer.DeserializeAsync<T>(stream, Json, cancellationToken)
            ?? throw new InvalidDataException($"Hub store file '{path}' is empty.");
    }

    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Hub store: removed {Count} left-over temporary entries from {Folder}")]
    private static partial void LogTempRemoved(ILogger logger, int count, string folder);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Hub store: repository {RepoId} created (private: {Private}) by {Author}")]
    private static partial void LogRepositoryCreated(ILogger logger, string repoId, bool @private, string author);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Debug, Message = "Hub store: blob {Sha256} ({Size} bytes) stored")]
    private static partial void LogBlobStored(ILogger logger, string sha256, long size);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Warning, Message = "Hub store: refused an upload announced as {Expected} that hashes to {Actual} ({Size} bytes)")]
    private static partial void LogHashMismatch(ILogger logger, string expected, string actual, long size);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Information, Message = "Hub store: {RepoId}@{Branch} -> {Commit} ({Operations} operations) by {Author}")]
    private static partial void LogCommitted(ILogger logger, string repoId, string branch, string commit, int operations, string author);
}
