namespace SensMerging.Hub;

/// <summary>Checks on names that come from a server before they become paths in the cache.</summary>
public static class HubPaths
{
    /// <summary>
    /// Returns why a repository-relative file path is unsafe, or null when it is safe: it must be relative, use '/'
    /// separators only, and have no empty, '.' or '..' segment.
    /// </summary>
    public static string? WhyUnsafe(string path)
    {
        if (string.IsNullOrEmpty(path))
        {
            return "the path is empty";
        }

        if (path.Contains('\\', StringComparison.Ordinal))
        {
            return "it contains a backslash";
        }

        if (path.Contains('\0', StringComparison.Ordinal))
        {
            return "it contains a NUL character";
        }

        if (path[0] == '/' || Path.IsPathRooted(path) || (path.Length >= 2 && path[1] == ':'))
        {
            return "it is an absolute path";
        }

        foreach (var segment in path.Split('/'))
        {
            if (segment.Length == 0)
            {
                return "it has an empty segment";
            }

            if (segment is "." or "..")
            {
                return $"it has a '{segment}' segment that would leave the snapshot folder";
            }
        }

        return null;
    }

    /// <summary>Throws <see cref="HubUnsafePathException"/> when <paramref name="path"/> is unsafe.</summary>
    public static void EnsureSafe(string repoId, string? revision, string path)
    {
        var reason = WhyUnsafe(path);
        if (reason is not null)
        {
            throw new HubUnsafePathException(repoId, revision, path, reason);
        }
    }

    /// <summary>Joins a validated relative path onto a root folder and checks the result stays inside it.</summary>
    public static string Combine(string root, string repoId, string? revision, string relativePath)
    {
        EnsureSafe(repoId, revision, relativePath);
        var rootFull = Path.GetFullPath(root);
        var full = Path.GetFullPath(Path.Combine(rootFull, relativePath.Replace('/', Path.DirectorySeparatorChar)));
        var prefix = rootFull.EndsWith(Path.DirectorySeparatorChar) ? rootFull : rootFull + Path.DirectorySeparatorChar;
        if (!full.StartsWith(prefix, StringComparison.Ordinal))
        {
            throw new HubUnsafePathException(repoId, revision, relativePath, "it resolves outside the target folder");
        }

        return full;
    }
}
