/* GStreamer captchaocr element: reads captcha text in video frames.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef __GST_CAPTCHA_OCR_H__
#define __GST_CAPTCHA_OCR_H__

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_CAPTCHA_OCR (gst_captcha_ocr_get_type ())
G_DECLARE_FINAL_TYPE (GstCaptchaOcr, gst_captcha_ocr, GST, CAPTCHA_OCR,
    GstVideoFilter);

GST_ELEMENT_REGISTER_DECLARE (captchaocr);

G_END_DECLS

#endif /* __GST_CAPTCHA_OCR_H__ */
