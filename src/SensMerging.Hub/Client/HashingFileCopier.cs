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
/// bytes hashed, whatever stops the copy (a network error, cancellation, a write error). When the body breaks off or
/// stalls, the part of a chunk already received is still handed on, hashed and written, so a resume starts exactly
/// after the last byte that arrived.
/// </summary>
internal static class HashingFileCopier
{
    /// <summary>Buffers in the ring: one being read, one being hashed and written, one spare to absorb jitter.</summary>
    internal const int Depth = 3;

    /// <summary>
    /// Reads <paramref name="source"/> to its end (or until more than <paramref name="limit"/> bytes arrived) and
    /// appends it to <paramref name="target"/> from <paramref name="offset"/>. Returns the bytes written and, when the
    /// body failed mid-stream (an <see cref="IOException"/>) or no byte arrived for <paramref name="readTimeout"/> (a
    /// <see cref="TimeoutException"/>), that interruption; every byte received before it is written and hashed.
    /// </summary>
    public static async Task<(long Written, Exception? Interruption)> CopyAsync(
        Stream source, SafeFileHandle target, long offset, long limit, int chunkSize, TimeSpan readTimeout,
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
        var reader = ReadChunksAsync(source, buffers, chunkSize, limit, readTimeout, free.Reader, filled.Writer, stop.Token);
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
        if (readError is null or IOException or TimeoutException)
        {
            return (written, readError);
        }

        ExceptionDispatchInfo.Throw(readError);
        return default;
    }

    /// <summary>
    /// The reader stage; never throws: it ends the channel and returns what stopped it (null at the end of the body). A
    /// chunk is handed on when it is full, at the end of the body, and also when the body fails or stalls part-way
    /// through it, so no received byte is dropped.
    /// </summary>
    private static async Task<Exception?> ReadChunksAsync(
        Stream source, byte[][] buffers, int chunkSize, long limit, TimeSpan readTimeout, ChannelReader<int> free,
        ChannelWriter<(int, int)> filled, CancellationToken cancellationToken)
    {
        await Task.Yield();
        Exception? error = null;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        try
        {
            long total = 0;
            bool ended = false;
            while (!ended && total <= limit)
            {
                int index = await free.ReadAsync(cancellationToken);
                int count = 0;
                try
                {
                    while (count < chunkSize)
                    {
                        idle.CancelAfter(readTimeout);
                        int n = await source.ReadAsync(buffers[index].AsMemory(count, chunkSize - count), idle.Token);
                        if (n == 0)
                        {
                            ended = true;
                            break;
                        }

                        count += n;
                    }
                }
                catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
                {
                    error = new TimeoutException(
                        $"No data received for {readTimeout.TotalSeconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture)} s.", ex);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    error = ex;
                }

                if (count > 0)
                {
                    await filled.WriteAsync((index, count), cancellationToken);
                    total += count;
                }

                if (error is not null)
                {
                    break;
                }
            }
        }
        catch (Exception ex)
        {
            error ??= ex;
        }

        filled.TryComplete();
        return error;
    }
}
