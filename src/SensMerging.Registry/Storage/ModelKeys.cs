namespace SensMerging.Registry.Storage;

/// <summary>
/// Normalized lookup keys for model references, stored with each merge so that <c>--model</c> and lineage queries
/// run on an index: <c>repo:org/name</c>, <c>repo:org/name@rev</c> (repo ids lowercased), <c>name:alias</c> and
/// <c>path:/abs/folder</c>.
/// </summary>
internal static class ModelKeys
{
    public static IReadOnlyList<string> ForInputs(IEnumerable<ModelInput> inputs)
    {
        var keys = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var input in inputs)
        {
            AddReference(keys, input.Reference);
            keys.Add(NameKey(input.Name));
            var repo = RepoPart(input.Reference);
            if (repo is not null)
            {
                if (!string.IsNullOrEmpty(input.RequestedRevision))
                {
                    keys.Add(RepoKey(repo + "@" + input.RequestedRevision));
                }
                if (!string.IsNullOrEmpty(input.ResolvedCommit))
                {
                    keys.Add(RepoKey(repo + "@" + input.ResolvedCommit));
                }
            }
            if (!string.IsNullOrEmpty(input.LocalPath))
            {
                keys.Add(PathKey(input.LocalPath));
            }
        }
        return [.. keys];
    }

    public static IReadOnlyList<string> ForOutputs(MergeOutputs? outputs)
    {
        if (outputs is null)
        {
            return [];
        }
        var keys = new SortedSet<string>(StringComparer.Ordinal) { PathKey(outputs.Folder) };
        if (!string.IsNullOrWhiteSpace(outputs.RepoId))
        {
            AddReference(keys, outputs.RepoId);
        }
        return [.. keys];
    }

    /// <summary>The keys a query reference matches: as a repo id (with or without revision), as an alias and, when it names a folder, as a path.</summary>
    public static IReadOnlyList<string> ForQuery(string reference)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reference);
        var r = reference.Trim();
        var keys = new SortedSet<string>(StringComparer.Ordinal) { NameKey(r) };
        if (!LooksLikePath(r))
        {
            keys.Add(RepoKey(r));
        }
        if (LooksLikePath(r) || Directory.Exists(r) || r.Contains('/', StringComparison.Ordinal))
        {
            keys.Add(PathKey(r));
        }
        return [.. keys];
    }

    /// <summary>The keys an input reference names by itself (repo id with and without revision, or folder), without alias, pins or local path.</summary>
    public static IReadOnlyList<string> ForReference(string reference)
    {
        var keys = new SortedSet<string>(StringComparer.Ordinal);
        AddReference(keys, reference);
        return [.. keys];
    }

    public static string PathKey(string path)
    {
        var full = Path.GetFullPath(path.Trim());
        var root = Path.GetPathRoot(full) ?? string.Empty;
        return "path:" + (full.Length > root.Length ? full.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar) : full);
    }

    private static string RepoKey(string repo) => "repo:" + repo.Trim().ToLowerInvariant();

    private static string NameKey(string name) => "name:" + name.Trim();

    private static void AddReference(SortedSet<string> keys, string reference)
    {
        var r = reference.Trim();
        if (LooksLikePath(r))
        {
            keys.Add(PathKey(r));
            return;
        }
        keys.Add(RepoKey(r));
        var repo = RepoPart(r);
        if (repo is not null && !string.Equals(repo, r, StringComparison.Ordinal))
        {
            keys.Add(RepoKey(repo));
        }
    }

    /// <summary>The <c>org/name</c> part of a Hub reference, or null for a path.</summary>
    public static string? RepoPart(string reference)
    {
        var r = reference.Trim();
        if (LooksLikePath(r))
        {
            return null;
        }
        var at = r.IndexOf('@', StringComparison.Ordinal);
        return at > 0 ? r[..at] : r;
    }

    public static bool LooksLikePath(string reference) =>
        Path.IsPathRooted(reference)
        || reference.StartsWith('.')
        || reference.StartsWith('~')
        || reference.Contains('\\', StringComparison.Ordinal)
        || reference.Count(c => c == '/') > 1;
}
