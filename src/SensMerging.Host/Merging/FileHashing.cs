namespace SensMerging.Host.Merging;

/// <summary>The files of a model folder, as the registry records them.</summary>
public static class FileHashing
{
    /// <summary>Every regular file (symlinks followed) under <paramref name="folder"/>, relative paths with '/', sorted; hidden files skipped.</summary>
    public static IReadOnlyList<(string RelativePath, string FullPath, long Size)> ListFiles(string folder) =>
        [.. Directory.EnumerateFiles(folder, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.Hidden })
            .Select(f => (Path.GetRelativePath(folder, f).Replace('\\', '/'), f, new FileInfo(f).Length))
            .Where(f => !f.Item1.StartsWith('.'))
            .OrderBy(f => f.Item1, StringComparer.Ordinal)];
}
