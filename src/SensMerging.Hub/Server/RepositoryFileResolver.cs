namespace SensMerging.Hub.Server;

/// <summary>A file a repository folder may serve: its path in the repository and the real file that holds the bytes.</summary>
/// <param name="Path">Path inside the repository ('/' separators), as the folder names it (a symlink keeps its own name).</param>
/// <param name="File">The real file (every symlink resolved): its size, time and content are what is served.</param>
public sealed record ResolvedRepositoryFile(string Path, FileInfo File);

/// <summary>
/// The one rule for what a repository folder serves. A file is served only when its real path (every symlink, of the
/// file and of the folders above it, resolved) is a regular file inside the repository's real root, or, when the
/// repository is a Hub-cache snapshot (<c>models--org--name/snapshots/{commit}</c>, whose files are symlinks into
/// <c>../../blobs</c>), inside that cache repository's <c>blobs/</c> folder. Links leading anywhere else, dangling links
/// and link loops are not part of the repository: not listed, and not found when asked for. Sizes, times and hashes
/// come from the real file, never from the link.
/// </summary>
public sealed class RepositoryFileResolver
{
    /// <summary>Links followed while resolving one path before it counts as a loop (Linux gives up at 40 as well).</summary>
    internal const int MaxLinkHops = 40;

    private readonly string[] _allowed;

    private RepositoryFileResolver(string root, string? cacheBlobs)
    {
        Root = root;
        CacheBlobs = cacheBlobs;
        _allowed = cacheBlobs is null ? [root] : [root, cacheBlobs];
    }

    /// <summary>The repository's real root folder.</summary>
    public string Root { get; }

    /// <summary>The cache repository's real blobs/ folder when the repository is a Hub-cache snapshot; null otherwise.</summary>
    public string? CacheBlobs { get; }

    /// <summary>
    /// A resolver for the repository folder <paramref name="folder"/>, or null when the folder does not exist (or is a
    /// dangling link or a loop). With <paramref name="container"/> (the real folder of all repositories), a repository
    /// whose real root lies outside it is refused (null) unless it is a Hub-cache snapshot.
    /// </summary>
    public static RepositoryFileResolver? TryCreate(string folder, string? container = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (RealPath(folder) is not { } root || !Directory.Exists(root))
        {
            return null;
        }

        var blobs = CacheBlobsOf(root);
        if (container is not null && blobs is null && !IsInside(root, container, allowEqual: false))
        {
            return null;
        }

        return new RepositoryFileResolver(root, blobs);
    }

    /// <summary>
    /// Every servable file under the root in ordinal path order. Folders named ".git" and root entries that
    /// <paramref name="skipAtRoot"/> names are left out; a linked folder is walked only when its real path lies inside
    /// the root and is not one of the folders being walked already (a link to a parent would never end).
    /// </summary>
    public IReadOnlyList<ResolvedRepositoryFile> Enumerate(Func<string, bool>? skipAtRoot = null)
    {
        var files = new List<ResolvedRepositoryFile>();
        var walking = new HashSet<string>(StringComparer.Ordinal) { Root };
        Walk(Root, string.Empty, skipAtRoot, walking, files);
        files.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return files;
    }

    /// <summary>
    /// True when <paramref name="realPath"/> is still what a listing found: a regular file whose real path is itself
    /// (no component became a symlink since). The server checks this right before it opens a file.
    /// </summary>
    public static bool IsUnchangedRealFile(string realPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(realPath);
        return string.Equals(RealPath(realPath), realPath, StringComparison.Ordinal) && File.Exists(realPath);
    }

    /// <summary>
    /// The canonical absolute path of <paramref name="path"/> with every symlink resolved (like realpath(3)), or null
    /// when a component does not exist or cannot be read, a link dangles, or more than <see cref="MaxLinkHops"/> links
    /// are met (a loop).
    /// </summary>
    public static string? RealPath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            return Resolve(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string? Resolve(string path)
    {
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full) ?? string.Empty;
        var pending = new Stack<string>(Split(full[root.Length..]).Reverse());
        var current = root;
        int hops = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part is "" or ".")
            {
                continue;
            }

            if (part == "..")
            {
                current = Path.GetDirectoryName(current) ?? root;
                continue;
            }

            var next = Path.Join(current, part);
            FileSystemInfo entry = new FileInfo(next);
            if (entry.LinkTarget is { } target)
            {
                if (++hops > MaxLinkHops)
                {
                    return null;
                }

                if (Path.IsPathRooted(target))
                {
                    current = Path.GetPathRoot(target) ?? root;
                    target = target[current.Length..];
                }

                foreach (var piece in Split(target).Reverse())
                {
                    pending.Push(piece);
                }

                continue;
            }

            if (!entry.Exists && !Directory.Exists(next))
            {
                return null;
            }

            current = next;
        }

        return current;
    }

    private void Walk(string realDir, string relPrefix, Func<string, bool>? skipAtRoot, HashSet<string> walking, List<ResolvedRepositoryFile> files)
    {
        foreach (var entry in new DirectoryInfo(realDir).EnumerateFileSystemInfos())
        {
            if ((relPrefix.Length == 0 && skipAtRoot?.Invoke(entry.Name) == true) || entry.Name == ".git")
            {
                continue;
            }

            // realDir has no links in it, so only the entry itself can be one.
            var real = entry.LinkTarget is null ? entry.FullName : RealPath(entry.FullName);
            if (real is null)
            {
                continue;
            }

            if (Directory.Exists(real))
            {
                if (IsInside(real, Root, allowEqual: false) && walking.Add(real))
                {
                    Walk(real, relPrefix + entry.Name + "/", skipAtRoot, walking, files);
                    walking.Remove(real);
                }

                continue;
            }

            if (Servable(real) is { } file)
            {
                files.Add(new ResolvedRepositoryFile(relPrefix + entry.Name, file));
            }
        }
    }

    private FileInfo? Servable(string real)
    {
        if (!_allowed.Any(a => IsInside(real, a, allowEqual: false)))
        {
            return null;
        }

        var info = new FileInfo(real);
        return info.Exists && info.LinkTarget is null ? info : null;
    }

    /// <summary>{cache}/models--org--name/blobs when <paramref name="root"/> is that repository's snapshots/{commit} folder.</summary>
    private static string? CacheBlobsOf(string root)
    {
        var snapshots = Path.GetDirectoryName(root);
        var repo = snapshots is null ? null : Path.GetDirectoryName(snapshots);
        if (repo is null || Path.GetFileName(snapshots) != "snapshots" || !HubHashing.IsSha1Hex(Path.GetFileName(root))
            || !Path.GetFileName(repo).Contains("--", StringComparison.Ordinal))
        {
            return null;
        }

        var blobs = Path.Combine(repo, "blobs");
        return RealPath(blobs) is { } real && Directory.Exists(real) ? real : null;
    }

    private static bool IsInside(string path, string folder, bool allowEqual)
    {
        if (string.Equals(path, folder, StringComparison.Ordinal))
        {
            return allowEqual;
        }

        var prefix = folder.EndsWith(Path.DirectorySeparatorChar) ? folder : folder + Path.DirectorySeparatorChar;
        return path.StartsWith(prefix, StringComparison.Ordinal);
    }

    private static string[] Split(string path) => path.Split(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
}
