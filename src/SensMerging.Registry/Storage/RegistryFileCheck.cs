using System.Buffers.Binary;
using System.Text;

namespace SensMerging.Registry.Storage;

/// <summary>
/// Reads the header page of an existing registry file before LiteDB opens it, so that a file that is not a LiteDB 5
/// database, or was truncated, is reported without LiteDB touching (or re-initialising) it. Only reads.
/// </summary>
internal static class RegistryFileCheck
{
    public const int PageSize = 8192;
    private const string HeaderInfo = "** This is a LiteDB file **";
    private const int HeaderInfoOffset = 32;
    private const int FileVersionOffset = 59;
    private const int LastPageIdOffset = 64;
    private const int InvalidStateOffset = 191;
    private const byte SupportedFileVersion = 8;

    /// <summary>Null when the file looks like a sound LiteDB 5 data file (or does not exist), else what is wrong.</summary>
    public static string? FindProblem(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists)
        {
            return null;
        }
        if (info.Length == 0)
        {
            return "the file is empty (0 bytes), not a LiteDB database";
        }
        var header = new byte[PageSize];
        int read;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None))
        {
            read = stream.ReadAtLeast(header, PageSize, throwOnEndOfStream: false);
        }
        var magic = read >= HeaderInfoOffset + HeaderInfo.Length
            ? Encoding.ASCII.GetString(header, HeaderInfoOffset, HeaderInfo.Length)
            : string.Empty;
        if (!string.Equals(magic, HeaderInfo, StringComparison.Ordinal))
        {
            return read < PageSize
                ? $"the file is {info.Length} bytes and has no LiteDB header; it is not a LiteDB database"
                : "the file has no LiteDB header; it is not a LiteDB database (or it is encrypted)";
        }
        if (read < PageSize)
        {
            return $"the file is {info.Length} bytes, shorter than one {PageSize}-byte LiteDB page: it is truncated";
        }
        var version = header[FileVersionOffset];
        if (version != SupportedFileVersion)
        {
            return $"LiteDB file format version {version}; this registry reads version {SupportedFileVersion} (LiteDB 5)";
        }
        if (header[InvalidStateOffset] != 0)
        {
            return "LiteDB marked the file as damaged (invalid datafile state)";
        }
        if (info.Length % PageSize != 0)
        {
            return $"the file is {info.Length} bytes, not a whole number of {PageSize}-byte pages: it is truncated or damaged";
        }
        var lastPage = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(LastPageIdOffset, 4));
        var expected = ((long)lastPage + 1) * PageSize;
        if (expected > info.Length)
        {
            return $"the header counts {lastPage + 1L} pages ({expected} bytes) but the file holds {info.Length} bytes: it is truncated";
        }
        return null;
    }
}
