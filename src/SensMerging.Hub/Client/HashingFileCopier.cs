using System.Buffers;
using System.Runtime.ExceptionServices;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.Win32.SafeHandles;

namespace SensMerging.Hub.Client;

/// <summary>
/// Copies a download body into a file through a small ring of pooled buffers, in two stages that overlap: a reader
/// task fills the next buffer from the network while the caller hashes (sha256, optional git sha1) and writes the
/// previous one. Each chunk is hashed and written as a unit, in order, so the bytes on disk are always exactly the
/// bytes hashed, whatever stops the copy (a network error, cancellation, a write error).
/// </summary>
internal static class HashingFileCopier
{
    /// <summary>Buffers in the ring: one being read, one being hashed and written, one spare to absorb jitter.</summary>
    internal const int Depth = 3;

    /// <summary>
    /// Reads <paramref name="source"/> to its end (or until more than <paramref name="limit"/> bytes arrived) and
    /// appends it to <paramref name="target"/> from <paramref name="offset"/>. Returns the bytes written and, when the
    /// body failed mid-stream with an <see cref="IOException"/>, that error (the written prefix is consistent).
    /// </summary>
    public static async Task<(long Written, IOException? ReadError)> CopyAsync(
        Stream source, SafeFileHandle target, long offset, long limit, int chunkSize,
        IncrementalHash sha256, IncrementalHash? gitSha1, Action<int> onChunk, CancellationToken cancellationToken)
    {
        var buffers = new byte[Depth][];
        var free = Channel.CreateBounded<int>(Depth);
        var filled = Channel.CreateBounded<(int Index, int Count)>(Depth);
        for (int i = 0; i < Depth; i++)
        {
            buffers[i] = ArrayPool<byte>.Shared.Rent(chunkSize);
            free.Writer.TryWrite(i);
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var reader = ReadChunksAsync(source, buffers, chunkSize, limit, free.Reader, filled.Writer, stop.Token);
        long written = 0;
        Exception? readError;
        try
        {
            await foreach (var (index, count) in filled.Reader.ReadAllAsync(cancellationToken))
            {
                var chunk = buffers[index].AsSpan(0, count);
                sha256.AppendData(chunk);
                gitSha1?.AppendData(chunk);

                // A synchronous positioned write: the bytes go to the page cache while the reader stage keeps going.
                RandomAccess.Write(target, chunk, offset + written);
                written += count;
                free.Writer.TryWrite(index);
                onChunk(count);
            }
        }
        finally
        {
            // Stops the reader when this stage failed or was cancelled; a no-op when the body simply ended.
            await stop.CancelAsync();
            readError = await reader;
            foreach (var buffer in buffers)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        // A cancelled copy must not read as a body that ended early (that would fail verification and drop the file).
        cancellationToken.ThrowIfCancellationRequested();
        if (readError is null or IOException)
        {
            return (written, readError as IOException);
        }

        ExceptionDispatchInfo.Throw(readError);
        return default;
    }

    /// <summary>The reader stage; never throws: it ends the channel and returns what stopped it (null at the end of the body).</summary>
    private static async Task<Exception?> ReadChunksAsync(
        Stream source, byte[][] buffers, int chunkSize, long limit, ChannelReader<int> free, ChannelWriter<(int, int)> filled,
        CancellationToken cancellationToken)
    {
        await Task.Yield();
        Exception? error = null;
        try
        {
            long total = 0;
            while (total <= limit)
            {
                int index = await free.ReadAsync(cancellationToken);
                int count = await source.ReadAtLeastAsync(buffers[index].AsMemory(0, chunkSize), chunkSize, throwOnEndOfStream: false, cancellationToken);
                if (count == 0)
                {
                    break;
                }

                await filled.WriteAsync((index, count), cancellationToken);
                total += count;
            }
        }
        catch (Exception ex)
        {
            error = ex;
        }

        filled.TryComplete();
        return error;
    }
}
