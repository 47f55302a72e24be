using System.Buffers;
using System.Security.Cryptography;

namespace SensMerging.Host.Merging;

/// <summary>SHA-256 of files, streamed through one pooled buffer.</summary>
public static class FileHashing
{
    public static async Task<string> Sha256Async(string path, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 22);
        try
        {
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan | FileOptions.Asynchronous);
            int read;
            while ((read = await stream.ReadAsync(buffer, cancellationToken)) > 0)
            {
                sha.AppendData(buffer, 0, read);
            }
            return Convert.ToHexStringLower(sha.GetHashAndReset());
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Every regular file (symlinks followed) under <paramref name="folder"/>, relative paths with '/', sorted.</summary>
    public static IReadOnlyList<(string RelativePath, string FullPath, long Size)> ListFiles(string folder) =>
        [.. Directory.EnumerateFiles(folder, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.Hidden })
            .Select(f => (Path.GetRelativePath(folder, f).Replace('\\', '/'), f, new FileInfo(f).Length))
            .Where(f => !f.Item1.StartsWith('.'))
            .OrderBy(f => f.Item1, StringComparer.Ordinal)];
}
