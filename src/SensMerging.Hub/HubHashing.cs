using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace SensMerging.Hub;

/// <summary>Hashes the Hub uses as etags: sha256 of the content (LFS files) and the git blob sha1 (small files).</summary>
public static class HubHashing
{
    /// <summary>True for a 64-character lowercase or uppercase hex string (a sha256 etag).</summary>
    public static bool IsSha256Hex(string? value) => value is { Length: 64 } && IsHex(value);

    /// <summary>True for a 40-character hex string (a git sha1: commit id or blob id).</summary>
    public static bool IsSha1Hex(string? value) => value is { Length: 40 } && IsHex(value);

    /// <summary>Lowercase hex of bytes.</summary>
    public static string ToHex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);

    /// <summary>The header git prepends to a blob before hashing it: "blob {length}\0".</summary>
    public static byte[] GitBlobHeader(long length) =>
        Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"blob {length}\0"));

    /// <summary>The git blob sha1 of a byte array: sha1("blob {len}\0" + bytes).</summary>
    public static string GitBlobSha1(ReadOnlySpan<byte> content)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        hash.AppendData(GitBlobHeader(content.Length));
        hash.AppendData(content);
        return ToHex(hash.GetHashAndReset());
    }

    /// <summary>The text of the git LFS pointer file that stands for a large file in git.</summary>
    public static string LfsPointerText(string sha256, long size) =>
        string.Create(CultureInfo.InvariantCulture, $"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n");

    /// <summary>Hashes a file once, computing its sha256 and (optionally) its git blob sha1 in the same pass.</summary>
    public static async Task<(string Sha256, string? GitSha1, long Length)> HashFileAsync(
        string path, bool withGitSha1, int bufferSize, CancellationToken cancellationToken)
    {
        using var sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var sha1 = withGitSha1 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA1) : null;
        var buffer = ArrayPool<byte>.Shared.Rent(bufferSize);
        try
        {
            await using var stream = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.Open, Access = FileAccess.Read, Share = FileShare.Read,
                BufferSize = 0, Options = FileOptions.Asynchronous | FileOptions.SequentialScan,
            });
            long length = stream.Length;
            sha1?.AppendData(GitBlobHeader(length));
            long total = 0;
            int read;
            while ((read = await stream.ReadAsync(buffer.AsMemory(0, bufferSize), cancellationToken)) > 0)
            {
                sha256.AppendData(buffer, 0, read);
                sha1?.AppendData(buffer, 0, read);
                total += read;
            }

            if (total != length)
            {
                throw new IOException($"File '{path}' changed while it was being hashed ({length} bytes expected, {total} read).");
            }

            return (ToHex(sha256.GetHashAndReset()), sha1 is null ? null : ToHex(sha1.GetHashAndReset()), total);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static bool IsHex(string value)
    {
        foreach (var c in value)
        {
            if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return true;
    }
}
