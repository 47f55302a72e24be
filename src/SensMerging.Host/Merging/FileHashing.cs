using SensMerging.Hub;
using SensMerging.Registry;

namespace SensMerging.Host.Merging;

/// <summary>The files of a model folder as the registry records them: the size and SHA-256 of the bytes a merge reads.</summary>
public static class FileHashing
{
    private const int HashBufferBytes = 4 << 20;

    /// <summary>
    /// Every regular file under <paramref name="folder"/> (hidden files skipped), relative paths with '/', sorted, with the
    /// file the path leads to: a symbolic link (a Hub cache snapshot links each file to its blob) is followed to its final
    /// target, whose length is the file's, not the length of the link text.
    /// </summary>
    public static IReadOnlyList<(string RelativePath, FileInfo Target)> ListFiles(string folder) =>
        [.. Directory.EnumerateFiles(folder, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.Hidden })
            .Select(f => (Relative: Path.GetRelativePath(folder, f).Replace('\\', '/'), Path: f))
            .Where(f => !f.Relative.StartsWith('.'))
            .OrderBy(f => f.Relative, StringComparer.Ordinal)
            .Select(f => (f.Relative, Target(f.Path)))];

    /// <summary>
    /// <see cref="ListFiles"/> with each file's size and SHA-256: taken from <paramref name="verifiedSha256"/> (by relative
    /// path: what a Hub pull verified) where present, else by hashing the file; the size is always the target's.
    /// </summary>
    public static async Task<IReadOnlyList<FileHash>> DescribeAsync(string folder, IReadOnlyDictionary<string, string> verifiedSha256, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(verifiedSha256);
        var files = new List<FileHash>();
        foreach (var (relative, target) in ListFiles(folder))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (verifiedSha256.TryGetValue(relative, out var known))
            {
                files.Add(new FileHash(relative, known, target.Length));
                continue;
            }
            var (sha256, _, length) = await HubHashing.HashFileAsync(target.FullName, withGitSha1: false, HashBufferBytes, cancellationToken);
            files.Add(new FileHash(relative, sha256, length));
        }
        return files;
    }

    /// <summary>The file behind <paramref name="path"/>: itself, or the final target of a (chain of) symbolic link(s).</summary>
    private static FileInfo Target(string path)
    {
        var file = new FileInfo(path);
        return file.LinkTarget is null ? file : file.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? file;
    }
}
